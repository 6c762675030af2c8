#!/usr/bin/env python3
"""Strip the gogoproto and grpc-gateway annotations from etcd's .proto files.

Usage: strip-etcd-protos.py SRC DST

etcd's protos import "gogoproto/gogo.proto" (Go code-generation options) and
"google/api/annotations.proto" (HTTP gateway routes). Neither affects the wire
format or the gRPC service definitions, and neither is needed for Swift code
generation, so this removes:

  * the two imports (and the "// for grpc-gateway" comment above the second),
  * file/message/field options `option (gogoproto.…) = …;`,
  * field options `[(gogoproto.…) = …]` (also when combined with other options),
  * `option (google.api.http) = { … };` blocks inside rpc definitions
    (including nested `additional_bindings { … }`).

Everything else is copied byte for byte. The result is checked for leftovers.
"""
import re
import sys


def strip_http_options(text: str) -> str:
    """Remove each `option (google.api.http) = { ... };` block, with its line(s).

    The blocks may nest (`additional_bindings { ... }`), so braces are matched.
    """
    pattern = re.compile(r"\n[ \t]*option \(google\.api\.http\) = \{")
    while (m := pattern.search(text)) is not None:
        depth, i = 1, m.end()
        while depth:
            if i >= len(text):
                sys.exit("strip-etcd-protos: unbalanced braces in a google.api.http option")
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        end = re.match(r"[ \t]*;[ \t]*(?=\n)", text[i:])
        if end is None:
            sys.exit("strip-etcd-protos: a google.api.http option does not end with '};'")
        text = text[: m.start()] + text[i + end.end() :]
    return text


def strip(text: str) -> str:
    text = strip_http_options(text)
    # import lines
    text = re.sub(r'\n(?:// for grpc-gateway\n)?import "google/api/annotations\.proto";[ \t]*(?=\n)', "", text)
    text = re.sub(r'\nimport "gogoproto/gogo\.proto";[ \t]*(?=\n)', "", text)
    # option (gogoproto.xxx) = value;
    text = re.sub(r"\n[ \t]*option \(gogoproto\.[A-Za-z_]+\) = [^;\n]*;[ \t]*(?=\n)", "", text)

    # [(gogoproto.x) = v, (gogoproto.y) = w, other = z] field options
    def fix_options(m: re.Match) -> str:
        opts = [o.strip() for o in m.group(1).split(",")]
        kept = [o for o in opts if not o.startswith("(gogoproto.")]
        return " [" + ", ".join(kept) + "]" if kept else ""

    text = re.sub(r"\s*\[([^\[\]]*\(gogoproto\.[^\[\]]*)\]", fix_options, text)
    return text


def main() -> None:
    src, dst = sys.argv[1], sys.argv[2]
    with open(src, encoding="utf-8") as f:
        text = f.read()
    out = strip(text)
    for leftover in ("gogoproto", "google.api", "google/api"):
        if leftover in out:
            sys.exit(f"strip-etcd-protos: '{leftover}' still present in {src}")
    with open(dst, "w", encoding="utf-8") as f:
        f.write(out)


if __name__ == "__main__":
    main()
