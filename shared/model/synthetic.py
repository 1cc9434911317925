"""A seeded generator of labelled classified ads that look like a real moderation queue.

The same `seed` and `n` give the same ads and labels on every machine: all randomness
comes from one `random.Random(seed)`, drawn in a fixed order.

Generating rules
----------------
Every ad starts as an honest one: an item from its category's catalogue, a name with
optional qualifiers and a description of a few sentences (condition, specs, reason for
selling, price, pickup or delivery, how to reach the seller *on the platform*, an
aside), or, one time in ten, a careful one of up to ~1,000 characters.
Verified sellers are more common (65 %) and post more images than unverified ones.

About 28 % of ads are then turned into violations of one of four kinds:

- ``off_platform_contact`` (35 %): a phone number, an e-mail, a messenger handle or a
  link that takes the deal off the platform, written into an otherwise honest ad.
  A fifth of these are obfuscated (digits spelled out, "name at gmail dot com",
  "the blue messenger") so that no single pattern finds them all, and handles often
  come without their "@" ("Telegram: ivan_sale12").
- ``prohibited_goods`` (20 %): counterfeits, weapons without licence, prescription
  drugs, forged documents, pirated keys..., sometimes in euphemisms ("1:1 copy"), and
  half the time with the item's condition, as an honest ad gives it.
- ``empty_scam`` (20 %): mostly unverified sellers with no images and an empty-looking
  description (".", "call", "details by phone"), often asking for prepayment.
- ``shouting_spam`` (25 %): capital letters, runs of "!!!", repeated slogans and
  keyword stuffing; a third of them also carry a contact.

Honest ads contain the traps a moderator knows: phone models ("Samsung Galaxy"),
"no calls, chat only", mileage and years (many digits), counts spelled out ("three
seats", the digit words of obfuscated phone numbers), brand names and technical
acronyms in capitals ("HDMI, USB-C"), the everyday words abuse uses too ("any", "at",
"by me", "cash", "card"), long descriptions, and a share of short, image-less ads
from unverified sellers that are fine.

Ambiguous cases keep the task honest: an honest-looking ad that only says "write me
in messenger" is a violation half of the time, a bare low-effort ad 15 % of the
time, and 1.5 % of all labels are flipped (moderators disagree). The seed's four
features (verified, images, description length, category) see only part of this.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

from shared.domain import Ad
from shared.model import synthetic_catalogue as catalogue

DEFAULT_SIZE = 20_000
DEFAULT_SEED = 20240501
# The date the generator's rules were last changed: model versions trained on synthetic
# data carry it, so the same seed gives the same version string on any day.
RULES_DATE = "2026-12-06"

VIOLATION_RATE = 0.28
LABEL_NOISE = 0.015
VIOLATION_KINDS = ("off_platform_contact", "prohibited_goods", "empty_scam", "shouting_spam")
_KIND_WEIGHTS = (0.35, 0.20, 0.20, 0.25)
_BARE_CONTACT = 0.4  # share of contacts written with no words around them
_BARE_HANDLE = 0.4  # share of messenger handles written without their "@"
_LONG_FORM = 0.1  # share of honest descriptions written at length, up to ~1,000 characters


@dataclass(frozen=True, slots=True)
class LabelledAds:
    """Ads with their labels (1 = violation) and a description of where they came from."""

    ads: list[Ad]
    labels: list[int]
    source: dict[str, object] = field(default_factory=dict)


def generate_ads(n: int = DEFAULT_SIZE, seed: int = DEFAULT_SEED) -> LabelledAds:
    """`n` labelled ads, the same for the same `seed` on every machine."""
    rng = random.Random(seed)
    ads: list[Ad] = []
    labels: list[int] = []
    kinds: Counter[str] = Counter()
    category_ids = list(catalogue.CATEGORIES)
    category_weights = [catalogue.CATEGORIES[c].weight for c in category_ids]
    for index in range(n):
        category = rng.choices(category_ids, category_weights)[0]
        ad, label, kind = _generate_one(rng, index + 1, category)
        if rng.random() < LABEL_NOISE:
            label = 1 - label
            kind += "+flipped"
        ads.append(ad)
        labels.append(label)
        kinds[kind] += 1
    source = {
        "kind": "synthetic",
        "generator": __name__,
        "seed": seed,
        "size": n,
        "violation_rate": round(sum(labels) / n, 4) if n else 0.0,
        "label_noise": LABEL_NOISE,
        "kinds": dict(sorted(kinds.items())),
    }
    return LabelledAds(ads=ads, labels=labels, source=source)


def _generate_one(rng: random.Random, item_id: int, category: int) -> tuple[Ad, int, str]:
    if rng.random() < VIOLATION_RATE:
        kind = rng.choices(VIOLATION_KINDS, _KIND_WEIGHTS)[0]
        return _VIOLATIONS[kind](rng, item_id, category), 1, kind
    return _honest_ad(rng, item_id, category)


def _honest_ad(rng: random.Random, item_id: int, category: int) -> tuple[Ad, int, str]:
    verified = rng.random() < 0.65
    roll = rng.random()
    if not verified and roll < 0.12:
        # A terse ad from a newcomer: looks like the empty scams, but is fine (mostly).
        ad = _ad(
            rng,
            item_id,
            category,
            verified,
            images=_images(rng, 0.7),
            description=rng.choice(catalogue.TERSE_DESCRIPTIONS),
        )
        is_violation = rng.random() < 0.15
        return ad, int(is_violation), "terse_ad"
    description = _honest_description(rng, category, images_hint=True)
    if roll > 0.96:
        # "Reach me in messenger" without a handle: moderators split on these.
        description += " " + rng.choice(catalogue.VAGUE_CONTACTS)
        ad = _ad(rng, item_id, category, verified, _images(rng, 0.2), description)
        return ad, int(rng.random() < 0.5), "vague_contact"
    ad = _ad(
        rng, item_id, category, verified, _images(rng, 0.05 if verified else 0.25), description
    )
    return ad, 0, "honest"


def _honest_description(rng: random.Random, category: int, images_hint: bool) -> str:
    spec = catalogue.CATEGORIES[category]
    low, high = spec.price
    long_form = rng.random() < _LONG_FORM
    parts = [rng.choice(catalogue.CONDITIONS).format(years=rng.randint(1, 6))]
    specs = rng.randint(3, len(spec.specs)) if long_form else rng.randint(0, 3)
    parts += [s[0].upper() + s[1:] + "." for s in rng.sample(spec.specs, k=specs)]
    optional = (catalogue.REASONS, catalogue.PRICES, catalogue.LOGISTICS, catalogue.ON_PLATFORM)
    for pool in optional:
        if rng.random() < (0.9 if long_form else 0.55):
            parts.append(
                rng.choice(pool).format(
                    price=_price(rng, low, high), district=rng.choice(catalogue.DISTRICTS)
                )
            )
    if rng.random() < 0.12:
        count = rng.choice(catalogue.SPELLED_COUNTS)
        parts.append(rng.choice(catalogue.COUNTED_NOTES).format(count=count, Count=count.title()))
    if rng.random() < 0.3:
        parts.append(rng.choice(catalogue.HONEST_ASIDES))
    if long_form:
        parts += rng.sample(catalogue.LONG_AD_DETAILS, k=rng.randint(4, 8))
    if images_hint and rng.random() < 0.2:
        parts.append(rng.choice(catalogue.PHOTO_NOTES))
    if rng.random() < 0.08:
        parts.append(rng.choice(catalogue.LOUD_HONEST_NOTES))
    rng.shuffle(parts)
    return " ".join(parts)


def _off_platform_contact(rng: random.Random, item_id: int, category: int) -> Ad:
    description = _honest_description(rng, category, images_hint=True)
    contact = _obfuscated_contact(rng) if rng.random() < 0.2 else _contact(rng)
    sentences = description.split(". ")
    sentences.insert(rng.randint(0, len(sentences)), contact)
    verified = rng.random() < 0.45
    return _ad(rng, item_id, category, verified, _images(rng, 0.2), ". ".join(sentences))


def _prohibited_goods(rng: random.Random, item_id: int, category: int) -> Ad:
    item, pitch = rng.choice(catalogue.PROHIBITED)
    parts = [pitch, *rng.sample(catalogue.PROHIBITED_EXTRAS, k=rng.randint(0, 2))]
    if rng.random() < 0.5:
        # Sellers of banned goods describe their condition too: were it only honest ads
        # that did, "In good condition." would clear a pistol sold without a licence.
        parts.append(rng.choice(catalogue.CONDITIONS).format(years=rng.randint(1, 6)))
    if rng.random() < 0.5:
        parts.append(rng.choice(catalogue.PRICES).format(price=_price(rng, 10, 500), district=""))
    if rng.random() < 0.25:
        parts.append(_contact(rng))
    rng.shuffle(parts)
    verified = rng.random() < 0.3
    name = item if rng.random() < 0.7 else f"{item}, {rng.choice(catalogue.PROHIBITED_SUFFIXES)}"
    return Ad(
        item_id=item_id,
        seller_id=_seller(rng),
        is_verified_seller=verified,
        name=name,
        description=" ".join(parts),
        category=category,
        images_qty=_images(rng, 0.3),
    )


def _empty_scam(rng: random.Random, item_id: int, category: int) -> Ad:
    description = rng.choice(catalogue.EMPTY_DESCRIPTIONS)
    if rng.random() < 0.6:
        description = (description + " " + rng.choice(catalogue.SCAM_CUES)).strip()
    verified = rng.random() < 0.1
    name = _item_name(rng, category)
    if rng.random() < 0.3:
        name = f"{name} {rng.choice(catalogue.SCAM_SUFFIXES)}"
    return Ad(
        item_id=item_id,
        seller_id=_seller(rng),
        is_verified_seller=verified,
        name=name,
        description=description,
        category=category,
        images_qty=_images(rng, 0.85),
    )


def _shouting_spam(rng: random.Random, item_id: int, category: int) -> Ad:
    name = _item_name(rng, category)
    if rng.random() < 0.7:
        name = f"{name.upper()} {rng.choice(catalogue.SLOGANS)}"
    parts = rng.choices(catalogue.SLOGANS, k=rng.randint(1, 4))
    if rng.random() < 0.6:
        parts.append(rng.choice(catalogue.STUFFING))
    if rng.random() < 0.4:
        parts.append(_honest_description(rng, category, images_hint=False).upper())
    if rng.random() < 0.33:
        parts.append(_contact(rng))
    rng.shuffle(parts)
    verified = rng.random() < 0.3
    return Ad(
        item_id=item_id,
        seller_id=_seller(rng),
        is_verified_seller=verified,
        name=name,
        description=" ".join(parts),
        category=category,
        images_qty=_images(rng, 0.2),
    )


_VIOLATIONS = {
    "off_platform_contact": _off_platform_contact,
    "prohibited_goods": _prohibited_goods,
    "empty_scam": _empty_scam,
    "shouting_spam": _shouting_spam,
}


def _contact(rng: random.Random) -> str:
    channel = rng.choice(("phone", "phone", "email", "handle", "link"))
    if channel == "phone":
        value, wrappers = _phone(rng), catalogue.PHONE_WRAPPERS
    elif channel == "email":
        value, wrappers = _email(rng), catalogue.EMAIL_WRAPPERS
    elif channel == "handle":
        value = _handle(rng)
        value, wrappers = f"{rng.choice(catalogue.MESSENGERS)} {value}", catalogue.HANDLE_WRAPPERS
    else:
        value, wrappers = _url(rng), catalogue.LINK_WRAPPERS
    # Real spammers often drop the contact in bare, with no word around it to learn from.
    wrapper = "{}" if rng.random() < _BARE_CONTACT else rng.choice(wrappers)
    return wrapper.format(value)


def _url(rng: random.Random) -> str:
    first, second = rng.choice(catalogue.SITE_WORDS), rng.choice(catalogue.SITE_WORDS)
    site = f"{first}-{second}{rng.randint(1, 99)}.{rng.choice(catalogue.TLDS)}"
    code = "".join(rng.choices("abcdefghkmnpqrstuvwxyzABCDEFGH23456789", k=6))
    return rng.choice(
        (
            f"http://{site}/item{rng.randint(10, 9999)}",
            f"https://{site}",
            f"www.{site}",
            f"https://bit.ly/{code}",
        )
    )


def _obfuscated_contact(rng: random.Random) -> str:
    style = rng.randrange(4)
    if style == 0:
        digits = "8" + "".join(str(rng.randrange(10)) for _ in range(10))
        return "Call " + " ".join(catalogue.DIGIT_WORDS[int(d)] for d in digits)
    if style == 1:
        name = rng.choice(catalogue.FIRST_NAMES)
        domain, tld = rng.choice(catalogue.MAIL_DOMAINS).split(".")
        return f"Mail {name} dot {rng.choice(catalogue.FIRST_NAMES)} at {domain} dot {tld}"
    if style == 2:
        nick = f"{rng.choice(catalogue.FIRST_NAMES)}{rng.randint(1, 999)}"
        return f"My nick in the blue messenger is {nick}"
    return "Number is in my profile name, call there"


def _phone(rng: random.Random) -> str:
    d = [str(rng.randrange(10)) for _ in range(10)]
    formats = (
        "+7 9{0}{1} {2}{3}{4}-{5}{6}-{7}{8}",
        "8 (9{0}{1}) {2}{3}{4} {5}{6} {7}{8}",
        "89{0}{1}{2}{3}{4}{5}{6}{7}{8}",
        "+44 7{0}{1}{2} {3}{4}{5}{6}{7}{8}",
        "+1 ({0}{1}{2}) {3}{4}{5}-{6}{7}{8}{9}",
    )
    return rng.choice(formats).format(*d)


def _email(rng: random.Random) -> str:
    first, dot = rng.choice(catalogue.FIRST_NAMES), rng.choice((".", "_", ""))
    user = f"{first}{dot}{rng.choice(catalogue.FIRST_NAMES)}{rng.randint(1, 99)}"
    return f"{user}@{rng.choice(catalogue.MAIL_DOMAINS)}"


def _handle(rng: random.Random) -> str:
    name, word = rng.choice(catalogue.FIRST_NAMES), rng.choice(catalogue.HANDLE_WORDS)
    # Without its "@" a handle escapes the handles signal, and the messenger's name
    # ("Telegram: ivan_sale12") is what gives it away.
    at = "" if rng.random() < _BARE_HANDLE else "@"
    return f"{at}{name}_{word}{rng.randint(1, 99)}"


def _item_name(rng: random.Random, category: int) -> str:
    return rng.choice(catalogue.CATEGORIES[category].items)


def _ad(
    rng: random.Random, item_id: int, category: int, verified: bool, images: int, description: str
) -> Ad:
    name = _item_name(rng, category)
    if rng.random() < 0.4:
        name = f"{name} {rng.choice(catalogue.NAME_QUALIFIERS)}"
    return Ad(
        item_id=item_id,
        seller_id=_seller(rng),
        is_verified_seller=verified,
        name=name,
        description=description,
        category=category,
        images_qty=images,
    )


def _images(rng: random.Random, p_none: float) -> int:
    return 0 if rng.random() < p_none else rng.randint(1, 10)


def _price(rng: random.Random, low: int, high: int) -> str:
    return f"{rng.randint(low, high)} {rng.choice(('EUR', 'USD', 'rub', '$'))}"


def _seller(rng: random.Random) -> int:
    return rng.randint(1, 50_000)
