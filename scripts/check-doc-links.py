#!/usr/bin/env python3
"""Renders the docs of nuwa's library crates and fails on any link that did
not become a link.

`RUSTDOCFLAGS="-D warnings" cargo doc` only fails on a link that rustdoc
cannot *resolve*, and only in the crate being documented. A link can resolve
and still come out as literal text (`[<code>nogil_catch</code>]`) with no
warning at all:

- **Cross-crate links need the other crate's docs on disk first.** rustdoc
  links to an item of another crate only if that crate's directory already
  exists in the output (`target/doc/nuwa_core/`) when it starts, or if the
  crate names an `html_root_url`; otherwise it silently writes the link text.
  `cargo doc --no-deps` documents the workspace members in parallel, in no
  particular order (cargo orders doc jobs by dependency only when it also
  documents the dependencies: rust-lang/cargo#8487), so on a clean `target/`
  nuwa-std's links to nuwa-core, and nuwa-ffi's to both, come out as text or
  not depending on which job ran first. A second run "fixes" them, which is
  why a local check passed.
- **Docs inlined from another crate are not linted where they are shown.**
  nuwa-ffi shows nuwa-core's and nuwa-std's items (`Panicked`, `GilOps`, ...)
  on its own pages, with their docs; rustdoc resolves their links in the
  original crate, and reports nothing about them while documenting nuwa-ffi.
- The crate front pages are READMEs pulled in with `include_str!`; their links
  are intra-doc links like any other, subject to both points above.

So this script renders the three crates the way a user's `cargo doc` does
(without `--no-deps`: dependencies first), into a directory of its own that
starts empty, and then reads the HTML:

1. text that looks like an unresolved link: `[name]`, `[path::to::item]`,
   `[name!]`, `[name()]` or `[` code `]` outside code blocks and signatures;
2. `href`s that are a Rust path left as written (`[text](crate::item)`
   whose target had no page), or a relative path to a file that does not
   exist (a README link to a repository file);
3. the set of workspace crates documented: exactly the library crates.

Usage:
    scripts/check-doc-links.py               render, then check
    scripts/check-doc-links.py --no-render DOC_DIR
                                             check an existing doc directory
                                             (for example target/doc)
"""

from __future__ import annotations

import argparse
import html.parser
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIBRARY_CRATES = ["nuwa_core", "nuwa_std", "nuwa_ffi"]
TARGET_DIR = ROOT / "target" / "doc-check"

# Elements whose text is code or machinery, not prose.
SKIPPED_TAGS = {"pre", "script", "style", "textarea", "rustdoc-search", "rustdoc-toolbar"}
# Elements that end a run of prose (a match never spans two of them).
BLOCK_TAGS = {
    "p", "li", "dd", "dt", "div", "section", "summary", "details",
    "h1", "h2", "h3", "h4", "h5", "h6", "td", "th", "table", "blockquote",
}
CODE = "\x00"  # stands for one <code> span in the prose

# `[x]` that is not an index (`v[i]`): a path, maybe with a disambiguator, a
# macro `!` or `()`, or one code span.
UNRESOLVED = re.compile(
    r"(?<![\w\])])\[\s*(?:\x00|(?:[a-z]+@)?[A-Za-z_][A-Za-z0-9_]*(?:::[A-Za-z_][A-Za-z0-9_]*)*(?:!|\(\))?)\s*\]"
)


# A URL with a scheme (`https:`, `mailto:`); `crate::x` is a Rust path.
URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:(?!:)")


class Page(html.parser.HTMLParser):
    """Collects the prose runs of one rustdoc page and its relative hrefs."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.skip_depth = 0  # > 0 inside pre/script/signatures
        self.stack: list[tuple[str, bool]] = []  # (tag, whether it skips)
        self.in_code = 0
        self.code_text: list[str] = []
        self.runs: list[tuple[str, list[str]]] = [("", [])]  # (text, code spans)
        self.hrefs: list[str] = []
        self.redirect = False

    def _text(self, text: str) -> None:
        run, codes = self.runs[-1]
        self.runs[-1] = (run + text, codes)

    def _break(self) -> None:
        if self.runs[-1][0]:
            self.runs.append(("", []))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attrs_d = dict(attrs)
        if tag == "meta" and attrs_d.get("http-equiv") == "refresh":
            self.redirect = True
        if tag in ("meta", "link", "img", "br", "hr", "input", "wbr"):
            return  # void elements: no end tag
        classes = (attrs_d.get("class") or "").split()
        skips = tag in SKIPPED_TAGS or "code-header" in classes or "item-decl" in classes
        self.stack.append((tag, skips))
        if skips:
            self.skip_depth += 1
        if tag in BLOCK_TAGS:
            self._break()
        if tag == "a" and attrs_d.get("href"):
            self.hrefs.append(attrs_d["href"])
        if tag == "code" and not self.skip_depth:
            self.in_code += 1
            self.code_text = []

    def handle_endtag(self, tag: str) -> None:
        # Pop to the matching tag (rustdoc's HTML is well formed; be lenient).
        while self.stack:
            open_tag, skips = self.stack.pop()
            if skips:
                self.skip_depth -= 1
            if open_tag == "code" and self.in_code and not self.skip_depth:
                self.in_code -= 1
                if not self.in_code:
                    run, codes = self.runs[-1]
                    codes.append("".join(self.code_text))
                    self.runs[-1] = (run + CODE, codes)
            if open_tag == tag:
                break
        if tag in BLOCK_TAGS:
            self._break()

    def handle_data(self, data: str) -> None:
        if self.skip_depth:
            return
        if self.in_code:
            self.code_text.append(data)
        else:
            self._text(data)

    def unresolved(self) -> list[str]:
        found = []
        for run, codes in self.runs:
            spans = iter(codes)
            # Put each code span back, in backticks, for the report.
            shown = re.sub(CODE, lambda _: f"`{next(spans, '?')}`", run)
            for match in UNRESOLVED.finditer(run):
                before = run[: match.start()].count(CODE)
                text = match.group(0)
                if CODE in text:
                    text = f"[`{codes[before]}`]"
                context = " ".join(shown.split())
                found.append(f"{text}   in: {context[:160]}")
        return found


def render() -> Path:
    """Renders the library crates' docs into a fresh directory, as `cargo doc`
    at the root does, and checks which workspace crates were documented."""
    doc_dir = TARGET_DIR / "doc"
    shutil.rmtree(doc_dir, ignore_errors=True)
    env = dict(os.environ, RUSTDOCFLAGS="-D warnings", CARGO_TERM_COLOR="never")
    # With nuwa-ffi's `stats` and `pyo3` features on, as docs.rs renders it
    # ([package.metadata.docs.rs]), so that their pages are checked too.
    cmd = [os.environ.get("CARGO", "cargo"), "doc", "--features", "nuwa-ffi/stats,nuwa-ffi/pyo3",
           "--target-dir", str(TARGET_DIR)]
    print(f"$ RUSTDOCFLAGS='-D warnings' cargo doc --features nuwa-ffi/stats,nuwa-ffi/pyo3 "
          f"--target-dir {TARGET_DIR.relative_to(ROOT)}", flush=True)
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.stderr.write(result.stderr)
        sys.exit(f"error: cargo doc failed (exit {result.returncode})")
    # " Documenting nuwa-core v0.1.0 (/path)": a path means a workspace member.
    members = sorted(
        m.group(1).replace("-", "_")
        for m in re.finditer(r"Documenting (\S+) v\S+ \(/", result.stderr)
    )
    if members != sorted(LIBRARY_CRATES):
        sys.exit(
            f"error: `cargo doc` at the root documented {members}; it must document "
            f"the library crates only ({', '.join(LIBRARY_CRATES)})"
        )
    return doc_dir


def check(doc_dir: Path) -> int:
    problems: list[str] = []
    pages = 0
    for crate in LIBRARY_CRATES:
        crate_dir = doc_dir / crate
        if not (crate_dir / "index.html").is_file():
            problems.append(f"{crate}: no {crate_dir / 'index.html'}")
            continue
        for path in sorted(crate_dir.rglob("*.html")):
            page = Page()
            page.feed(path.read_text(encoding="utf-8"))
            if page.redirect:
                continue
            pages += 1
            rel = path.relative_to(doc_dir)
            for found in page.unresolved():
                problems.append(f"{rel}: unresolved link {found}")
            for href in page.hrefs:
                if URL.match(href) or href.startswith(("#", "/")):
                    continue  # absolute URL, anchor on this page, or site root
                if "::" in href:  # `[text](crate::item)` left as it was written
                    problems.append(f"{rel}: unresolved link to {href}")
                    continue
                target = href.split("#", 1)[0].split("?", 1)[0]
                if target and not (path.parent / target).exists():
                    problems.append(f"{rel}: link to a missing page: {href}")
    for problem in dict.fromkeys(problems):  # keep order, drop repeats
        print(problem)
    if problems:
        print(f"\n{len(problems)} broken link(s) in the rendered docs of {', '.join(LIBRARY_CRATES)}")
        return 1
    print(f"doc links: {pages} pages of {', '.join(LIBRARY_CRATES)}, every link resolved")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-render", metavar="DOC_DIR", type=Path,
                        help="check DOC_DIR as it is instead of rendering")
    args = parser.parse_args()
    doc_dir = args.no_render if args.no_render else render()
    return check(doc_dir)


if __name__ == "__main__":
    sys.exit(main())
