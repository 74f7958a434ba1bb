"""Write a manifest-only "launcher" jar whose Class-Path lists a directory of jars.

``java -jar launcher.jar ARGS`` then runs MAIN_CLASS with every jar of LIBS_DIR on the
classpath, which is what Beam's Python SDK expects from a job-server or expansion-service jar
(``--flink_job_server_jar``, ``JavaJarExpansionService``). Used by ``scripts/services.sh``
when the shaded jar is not available from the package registry, so the classpath is
assembled from the individual Maven Central artifacts instead.

Usage::

    launcher_jar.py OUT.jar MAIN_CLASS LIBS_DIR
"""

from __future__ import annotations

import pathlib
import sys
import zipfile


def manifest_text(main_class: str, class_path: list[str]) -> str:
    """Build a MANIFEST.MF body with lines wrapped at 72 bytes as the jar spec requires.

    >>> print(manifest_text("a.B", ["file:/x.jar"]).replace("\\r\\n", "|"))
    Manifest-Version: 1.0|Main-Class: a.B|Class-Path: file:/x.jar||
    """
    if not main_class:
        raise ValueError(f"main_class must be non-empty; got {main_class!r}")
    lines = ["Manifest-Version: 1.0", f"Main-Class: {main_class}"]
    if class_path:
        lines.append("Class-Path: " + " ".join(class_path))
    out: list[str] = []
    for line in lines:
        data = line.encode("utf-8")
        out.append(data[:72].decode("utf-8"))
        data = data[72:]
        while data:
            out.append(" " + data[:71].decode("utf-8"))
            data = data[71:]
    return "\r\n".join(out) + "\r\n\r\n"


def write_launcher(out_jar: pathlib.Path, main_class: str, libs_dir: pathlib.Path) -> int:
    """Write the launcher jar; returns the number of jars put on its Class-Path."""
    jars = sorted(p.resolve() for p in libs_dir.glob("*.jar"))
    if not jars:
        raise ValueError(f"libs_dir must contain jars; got none in {libs_dir}")
    tmp = out_jar.with_suffix(".jar.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(
            "META-INF/MANIFEST.MF", manifest_text(main_class, [p.as_uri() for p in jars])
        )
    tmp.replace(out_jar)
    return len(jars)


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    out_jar, main_class, libs_dir = pathlib.Path(argv[0]), argv[1], pathlib.Path(argv[2])
    count = write_launcher(out_jar, main_class, libs_dir)
    print(f"wrote {out_jar} ({main_class}, {count} jars on Class-Path)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
