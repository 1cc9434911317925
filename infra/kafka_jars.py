"""The Apache Kafka broker's jars, resolved once with Maven into .cache/kafka/<version>/libs."""

from __future__ import annotations

import shutil
from pathlib import Path

from infra import _process

# Keep equal to <kafka.version> in infra/kafka/pom.xml.
KAFKA_VERSION = "4.3.2"
REPO_ROOT = Path(__file__).resolve().parents[1]
POM = Path(__file__).resolve().parent / "kafka" / "pom.xml"
CACHE_ROOT = REPO_ROOT / ".cache" / "kafka"
# A first resolution downloads about 45 MB; later ones copy from ~/.m2 in seconds.
MAVEN_TIMEOUT_S = 900.0
LOCK_TIMEOUT_S = MAVEN_TIMEOUT_S + 60.0


class MissingTool(RuntimeError):
    """A program the local infrastructure needs (java, mvn) is not installed."""


def require_tool(name: str, purpose: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise MissingTool(f"`{name}` is not installed or not on PATH; it is needed {purpose}")
    return path


def kafka_libs(version: str = KAFKA_VERSION, cache_root: Path = CACHE_ROOT) -> Path:
    """The folder of jars for `java -cp "<folder>/*"`, resolved with Maven unless already cached."""
    version_dir = cache_root / version
    libs, complete = version_dir / "libs", version_dir / ".complete"
    if complete.exists():
        return libs
    mvn = require_tool("mvn", "to download the Apache Kafka jars from Maven Central")
    version_dir.mkdir(parents=True, exist_ok=True)
    # Two test sessions in one checkout must not write the same folder at once.
    with _process.exclusive_lock(version_dir / ".lock", LOCK_TIMEOUT_S):
        if complete.exists():
            return libs
        partial = version_dir / "libs.partial"
        shutil.rmtree(partial, ignore_errors=True)
        _process.run_to_completion(
            [
                mvn,
                "--batch-mode",
                "--quiet",
                "-Dstyle.color=never",
                "-f",
                str(POM),
                f"-Dkafka.version={version}",
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={partial}",
            ],
            what=f"mvn resolving Apache Kafka {version}",
            timeout_s=MAVEN_TIMEOUT_S,
            cwd=version_dir,
        )
        if not any(partial.glob(f"kafka_2.13-{version}.jar")):
            raise RuntimeError(f"mvn finished but {partial} has no kafka_2.13-{version}.jar")
        shutil.rmtree(libs, ignore_errors=True)
        partial.rename(libs)
        complete.write_text(f"Apache Kafka {version}: jars resolved from {POM.name}\n")
    return libs
