"""A class-data-sharing archive of the broker's classes, to start the JVM faster.

Loading and verifying Kafka's classes is most of a broker's start-up. The first
broker started on a set of jars records the classes it loaded into an archive as
it exits (JDK 13+ -XX:ArchiveClassesAtExit); every later start maps that archive
instead, which cuts the JVM's part of a start from about 3 s to under 2 s on a
2-core machine. The JVM checks the archive against the JDK and the class path
itself and ignores it, with a warning in stdout.log, if either changed.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def archive_path(libs: Path) -> Path:
    """One archive per jar folder: .cache/kafka/<version>/broker.jsa next to libs/."""
    return libs.parent / "broker.jsa"


def class_archive_options(libs: Path) -> tuple[list[str], Path | None]:
    """JVM options that use the archive, or that write it at exit (and where) if there is none."""
    archive = archive_path(libs)
    if archive.exists():
        return [f"-XX:SharedArchiveFile={archive}"], None
    # A name of its own: several brokers may start at once and each writes its own.
    being_written = archive.with_name(f"broker.jsa.{os.getpid()}-{uuid.uuid4().hex[:8]}")
    return [f"-XX:ArchiveClassesAtExit={being_written}"], being_written


def shared_class_archive_option(libs: Path) -> list[str]:
    """The option that uses the archive if there is one; nothing otherwise."""
    archive = archive_path(libs)
    return [f"-XX:SharedArchiveFile={archive}"] if archive.exists() else []


def publish_class_archive(being_written: Path | None, libs: Path, *, stopped_cleanly: bool) -> None:
    """After the JVM exited: keep the archive it wrote, unless it was killed while writing it."""
    if being_written is None or not being_written.exists():
        return
    if stopped_cleanly and being_written.stat().st_size > 0:
        os.replace(being_written, archive_path(libs))
    else:
        being_written.unlink(missing_ok=True)
