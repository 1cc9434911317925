"""The vocabulary of the synthetic ads: categories with their items, and the phrases of
honest sellers and of each kind of abuse. The rules that combine them are in `synthetic.py`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Category:
    name: str
    items: tuple[str, ...]
    specs: tuple[str, ...]
    price: tuple[int, int]
    weight: float


CATEGORIES: dict[int, Category] = {
    3: Category(
        "phones",
        (
            "iPhone 12",
            "iPhone 13 Pro",
            "Samsung Galaxy S21",
            "Xiaomi Redmi Note 11",
            "Google Pixel 6",
            "OnePlus 9",
            "Nokia 3310",
            "Huawei P30",
        ),
        (
            "128GB",
            "64GB",
            "256GB",
            "dual SIM",
            "unlocked",
            "with charger",
            "original box",
            "battery health 89%",
            "screen protector on",
            "WhatsApp and all apps work",
            "NFC and USB-C",
            "memory card included",
        ),
        (40, 900),
        1.6,
    ),
    8: Category(
        "computers",
        (
            "MacBook Air M1",
            "Lenovo ThinkPad T480",
            "Dell XPS 13",
            "gaming PC",
            "ASUS ROG laptop",
            "HP EliteBook",
            "27 inch monitor",
            "mechanical keyboard",
        ),
        (
            "16GB RAM",
            "512GB SSD",
            "Core i7",
            "RTX 3060",
            "battery holds 6 hours",
            "no scratches",
            "Windows 11 activated",
            "charger included",
            "NVMe SSD and DDR4 RAM",
            "HDMI, USB-C and LAN ports",
            "Windows licence included",
        ),
        (60, 1800),
        1.2,
    ),
    12: Category(
        "cars",
        (
            "Toyota Corolla 2015",
            "Volkswagen Golf 2012",
            "BMW X5 2017",
            "Ford Focus 2014",
            "Kia Rio 2018",
            "Skoda Octavia 2016",
            "Honda Civic 2011",
        ),
        (
            "120000 km",
            "85 000 km",
            "one owner",
            "full service history",
            "winter tyres included",
            "automatic",
            "manual gearbox",
            "no accidents",
            "new brakes",
            "VIN on request",
            "LED headlights",
            "ABS, ESP and cruise control",
            "MOT valid until May",
        ),
        (2500, 35000),
        1.4,
    ),
    15: Category(
        "car parts",
        (
            "alloy wheels R17",
            "winter tyres 205/55 R16",
            "roof rack",
            "car battery 60Ah",
            "headlights for Golf 6",
            "dashcam",
            "parking sensors",
        ),
        ("fits 2008-2013 models", "set of 4", "barely used", "original part", "tested"),
        (15, 600),
        0.8,
    ),
    21: Category(
        "rentals",
        (
            "1-bedroom apartment",
            "studio near metro",
            "room in shared flat",
            "2-bedroom flat",
            "garage",
            "office space 40 m2",
        ),
        (
            "long term",
            "furnished",
            "pets allowed",
            "utilities included",
            "5 min to metro",
            "balcony",
            "deposit one month",
            "viewing on weekends",
        ),
        (300, 2500),
        1.0,
    ),
    27: Category(
        "furniture",
        (
            "IKEA sofa",
            "oak dining table",
            "wardrobe",
            "office chair",
            "bunk bed",
            "bookshelf",
            "armchair",
        ),
        (
            "200 cm wide",
            "self pickup, 3rd floor no lift",
            "disassembled",
            "no pets no smoking",
            "solid wood",
            "fabric cover washable",
        ),
        (10, 700),
        1.0,
    ),
    33: Category(
        "clothes",
        (
            "winter jacket",
            "Nike Air Max size 42",
            "leather boots",
            "wedding dress",
            "wool coat",
            "Levi's 501 jeans",
            "handbag",
        ),
        ("size M", "size 38", "worn twice", "original", "dry cleaned", "true to size"),
        (5, 400),
        1.2,
    ),
    38: Category(
        "kids",
        (
            "baby stroller",
            "LEGO Technic set",
            "kids bike",
            "crib with mattress",
            "toddler car seat",
            "school backpack",
        ),
        ("age 3-6", "all parts included", "non smoking home", "washed", "from 0 to 18 kg"),
        (5, 350),
        0.9,
    ),
    42: Category(
        "sports",
        (
            "road bike",
            "treadmill",
            "dumbbells set 20 kg",
            "snowboard",
            "tennis racket",
            "yoga mat",
            "camping tent",
        ),
        ("frame size 54", "serviced last month", "used one season", "foldable", "with bag"),
        (10, 1200),
        0.9,
    ),
    55: Category(
        "pets",
        (
            "British kitten",
            "aquarium 100 l",
            "dog crate",
            "parrot cage",
            "cat scratching post",
            "Labrador puppy",
        ),
        (
            "vaccinated",
            "litter trained",
            "with pedigree",
            "filter and heater included",
            "ready to move in 2 weeks",
        ),
        (10, 900),
        0.6,
    ),
    61: Category(
        "beauty",
        (
            "Dyson hair dryer",
            "perfume Chanel No 5",
            "massage chair",
            "electric toothbrush",
            "makeup set",
            "blood pressure monitor",
        ),
        ("sealed", "used a few times", "with receipt", "travel size", "50 ml"),
        (10, 500),
        0.7,
    ),
    68: Category(
        "services",
        (
            "apartment cleaning",
            "furniture assembly",
            "math tutoring",
            "moving help with van",
            "computer repair",
            "photo shoot",
        ),
        ("weekends too", "own tools", "10 years experience", "first lesson free", "price per hour"),
        (10, 150),
        0.8,
    ),
    77: Category(
        "hunting and fishing",
        (
            "fishing rod",
            "spinning reel",
            "inflatable boat",
            "hunting boots",
            "binoculars",
            "camping knife",
            "ice fishing tent",
        ),
        ("carbon", "3 m long", "waterproof", "size 44", "10x50", "with case"),
        (10, 800),
        0.5,
    ),
    84: Category(
        "jobs",
        ("courier wanted", "waiter part time", "warehouse worker", "sales assistant", "nanny"),
        (
            "official contract",
            "flexible hours",
            "weekly pay",
            "no experience needed",
            "training provided",
        ),
        (300, 2500),
        0.6,
    ),
    93: Category(
        "collectibles",
        (
            "old coins collection",
            "vinyl records",
            "vintage camera",
            "stamp album",
            "porcelain figurine",
            "Soviet badges",
        ),
        (
            "1970s",
            "about 200 pieces",
            "rare edition",
            "good condition for its age",
            "from grandfather's collection",
        ),
        (5, 1500),
        0.5,
    ),
}

CONDITIONS = (
    "Used for {years} years, works perfectly.",
    "Like new, only a few small scratches.",
    "In good condition.",
    "Brand new, still in the box.",
    "Some signs of wear.",
    "Fully working, tested yesterday.",
    "Condition is good for its age.",
)
REASONS = (
    "Selling because I moved.",
    "Upgraded to a new one.",
    "Not needed anymore.",
    "Kids grew out of it.",
    "Got it as a gift, never used.",
    "Clearing out the garage.",
)
PRICES = (
    "Price {price}, small bargain possible.",
    "Price {price} is final.",
    "Asking {price}.",
    "{price} or best offer.",
    "Price {price}, no exchanges.",
)
LOGISTICS = (
    "Pickup in {district}.",
    "Can send with the platform delivery.",
    "Meet near {district} metro station.",
    "Shipping through the site only.",
    "Self pickup in the evening.",
    "Delivery in {district} possible.",
)
ON_PLATFORM = (
    "Write in the chat here.",
    "Please message through the site, no calls.",
    "Answer all questions in messages.",
    "Call through the app.",
    "I do not give my phone number, use the chat.",
    "No calls please, messages here only.",
)
DISTRICTS = (
    "Central district",
    "North side",
    "Riverside",
    "Old Town",
    "Green Park",
    "Airport area",
    "University",
    "Harbour",
)
# Counts spelled out, as honest sellers write them: without these the digit words appear
# only in obfuscated phone numbers, and one "three" made "Sofa, three seats" a violation.
COUNTED_NOTES = (
    "{Count} seats.",
    "{Count} owners from new.",
    "Set of {count}.",
    "{Count} of them available, sold together.",
    "Used for {count} months only.",
    "Comes with {count} spare parts.",
    "Fits {count} people.",
)
SPELLED_COUNTS = ("two", "three", "four", "five", "six", "seven", "eight", "nine")
# Everyday words the abuse templates use too ("at", "any", "by", "me", "card", "cash"):
# honest sellers write them all the time, and while only violations did, the model took
# each one for a sign of abuse ("Any small jobs around the house" was a violation).
HONEST_ASIDES = (
    "Bought at the store last year, receipt kept.",
    "Ask any questions in the chat.",
    "Cash on pickup, or payment through the site's safe deal.",
    "Too big for me, so I sell it.",
    "Made by me, good quality.",
    "Works with any charger.",
    "Sold as a set, not by the piece.",
    "Worth the money.",
    "Paid by card in the shop, the receipt is in the box.",
    "Details and more photos in the chat.",
    "Can be seen at my place in the evening.",
    "Without any defects.",
    "I sell it because my kids do not use it any more.",
    "Happy to answer any question here on the site.",
)
# The sentences of a long, careful ad. Description length is one of the model's
# features, and while no honest ad ran past ~300 characters, a thorough 800-character
# one scored as a violation on its length alone.
LONG_AD_DETAILS = (
    "Serviced every year, all the receipts are kept in a folder that goes with it.",
    "Stored indoors in a dry place, in a non-smoking home without pets.",
    "I am the second owner; the first one used it for about a year and kept it well.",
    "Comes with the original manual and all the accessories that were in the box.",
    "There is a small scratch on the left side, see the last photo; it changes nothing.",
    "Selling only because we bought a bigger one for the family after the move.",
    "Happy to show it working before you buy, you can test it on the spot.",
    "The price is fair for the condition, similar ones sell for more on this site.",
    "Everything was checked last week and works as it should, nothing needs fixing.",
    "If you have questions about the details, write in the chat here and I answer the same day.",
    "Please come with a car or a van, it does not fit in a small hatchback.",
    "I can hold it for a day for a serious buyer who writes here first.",
)
PHOTO_NOTES = (
    "See photos.",
    "More photos on request in chat.",
    "Real photos, not from the internet.",
)

PROHIBITED = (
    ("replica Rolex watch", "Quality like original, 1:1 copy."),
    ("fake Louis Vuitton bag", "Looks exactly like the original."),
    ("counterfeit AirPods Pro", "Nobody will see the difference."),
    ("hunting rifle without licence", "No documents needed."),
    ("air pistol no documents", "Strong, no registration."),
    ("ammunition 9mm", "Boxes of 50, discreet."),
    ("prescription painkillers", "No prescription needed."),
    ("tramadol tablets", "Any quantity, discreet delivery."),
    ("anabolic steroids course", "Fast results, pharmacy quality."),
    ("pills for good mood", "Relax pills, discreet packaging."),
    ("driving licence any category", "Registered in the database."),
    ("university diploma any year", "With transcript, registered."),
    ("Windows keys cheap", "Activation guaranteed, lifetime."),
    ("signal jammer", "Blocks GPS and phones."),
    ("cigarettes without excise stamps", "Blocks of 10, wholesale."),
    ("police uniform with badge", "Real badge included."),
    ("ivory figurine", "Genuine ivory, old."),
)
PROHIBITED_EXTRAS = (
    "Discreet delivery.",
    "Bulk orders welcome.",
    "Cheap.",
    "Serious buyers only.",
    "Payment in advance.",
    "Many in stock.",
)

EMPTY_DESCRIPTIONS = (
    "",
    ".",
    "call",
    "ask",
    "details by phone",
    "sell",
    "urgent",
    "?",
    "-",
    "all questions by phone",
    "write",
    "cheap",
)
SCAM_CUES = (
    "Prepayment only.",
    "Send money to card first, then I ship.",
    "I am abroad, courier delivers after payment.",
    "Price is symbolic, hurry.",
    "Full prepayment, no meetings.",
    "Pay by transfer, no cash.",
)
SLOGANS = (
    "BEST PRICE!!!",
    "BUY NOW!!!",
    "HURRY UP!!!",
    "100% ORIGINAL!!!",
    "DISCOUNT 50%!!!",
    "CHEAPEST IN TOWN!!!",
    "LIMITED OFFER!!!",
    "FREE DELIVERY!!!",
    "WHOLESALE AND RETAIL!!!",
)
STUFFING = (
    "iphone samsung xiaomi huawei cheap cheap new original",
    "sale sale sale discount",
    "apple macbook ipad airpods watch",
    "wholesale retail dropshipping bulk",
    "cheap cheap cheap best best",
    "gucci prada nike adidas",
)

FIRST_NAMES = ("ivan", "anna", "max", "olga", "john", "kate", "alex", "maria", "dmitry", "sara")
MAIL_DOMAINS = ("gmail.com", "mail.ru", "yahoo.com", "outlook.com", "proton.me", "yandex.ru")
SITE_WORDS = ("cheap", "best", "mega", "deals", "shop", "outlet", "store", "goods", "sale", "top")
TLDS = ("com", "net", "ru", "shop", "biz", "site", "info")
HANDLE_WORDS = ("sale", "shop", "deals", "pro", "market", "official")
PHONE_WRAPPERS = (
    "Call me {}",
    "My number {}",
    "Phone: {}",
    "{} call after 6pm",
    "Text me on {}",
    "WhatsApp {}",
    "Tel {}",
    "{} any time",
)
EMAIL_WRAPPERS = ("Write to {}", "Email me: {}", "Details at {}", "{} for details")
HANDLE_WRAPPERS = ("{}", "Write in {}", "Add me on {}", "Find me: {}")
LINK_WRAPPERS = (
    "More photos on {}",
    "Order on our site {}",
    "Better price at {}",
    "See my other items at {}",
)
MESSENGERS = ("Telegram", "WhatsApp", "Viber", "Signal", "tg", "insta")
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

NAME_QUALIFIERS = ("used", "like new", "good condition", "cheap", "for sale")
TERSE_DESCRIPTIONS = (
    "Works fine.",
    "Good condition, pickup only.",
    "As in the title.",
    "Selling cheap, write in chat.",
    "Used.",
)
VAGUE_CONTACTS = (
    "Write me in messenger.",
    "Better reach me in the app with the green icon.",
    "Message me elsewhere for a discount.",
)
LOUD_HONEST_NOTES = ("NEW!", "URGENT sale.", "Original, not a copy!", "OK for parts.")
PROHIBITED_SUFFIXES = ("new", "cheap", "in stock")
SCAM_SUFFIXES = ("urgent", "cheap", "almost free")
