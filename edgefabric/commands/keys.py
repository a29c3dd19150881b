"""`edgefabric keys generate|sign|verify`: the model-signing key pair and signatures.

The private key stays in the cloud (or on the release machine); edges get only the public key.
`sign` prints the signature record the cloud attaches to a model update; `verify` is what an
operator runs to check a model file by hand, with the same code the edge runs before a load.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from schemas.signing import (
    ModelIntegrityError,
    TrustedKeys,
    generate_signing_key,
    key_id,
    load_private_key,
    sha256_hex,
    sign_model_update,
    verify_model_update,
    write_key_pair,
)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SystemExit(f"edgefabric keys: {exc}") from exc


def _generate(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    private_path, public_path = out / f"{args.name}.key", out / f"{args.name}.pub"
    if private_path.exists():
        print(f"edgefabric keys: {private_path} exists; not overwriting", file=sys.stderr)
        return 1
    key = generate_signing_key()
    write_key_pair(key, private_path, public_path)
    print(f"private key {private_path} (keep it off the edges)")
    print(f"public key  {public_path} (key id {key_id(key.public_key())})")
    return 0


def _sign(args: argparse.Namespace) -> int:
    model = Path(args.model)
    digest = sha256_hex(_read(model))
    name = args.name or model.stem
    signature = sign_model_update(
        name=name,
        version=args.version,
        sha256=digest,
        private_key=load_private_key(Path(args.key)),
    )
    record = {"name": name, "version": args.version, "sha256": digest, "signature": signature}
    text = json.dumps(record, indent=2) + "\n"
    if args.output:
        Path(args.output).write_text(text)
    else:
        print(text, end="")
    return 0


def _verify(args: argparse.Namespace) -> int:
    record = json.loads(_read(Path(args.signature)))
    try:
        verify_model_update(
            name=str(record.get("name", "")),
            version=str(record.get("version", "")),
            sha256=str(record.get("sha256", "")),
            signature=record.get("signature"),
            trusted=TrustedKeys.from_files(Path(p) for p in args.trust),
            model_bytes=_read(Path(args.model)),
        )
    except ModelIntegrityError as exc:
        print(f"REFUSED: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"OK: {record['name']} {record['version']} sha256={record['sha256']}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``keys`` and its subcommands."""
    keys = sub.add_parser("keys", help="model-signing keys (Ed25519): generate, sign, verify")
    actions = keys.add_subparsers(dest="keys_command", required=True)

    generate = actions.add_parser("generate", help="create a signing key pair")
    generate.add_argument("--out", default=".", help="directory for NAME.key and NAME.pub")
    generate.add_argument("--name", default="model-signing", help="file name stem")
    generate.set_defaults(handler=_generate)

    sign = actions.add_parser("sign", help="sign MODEL (prints the signature record as JSON)")
    sign.add_argument("model", help="model file, e.g. model.onnx")
    sign.add_argument("--key", required=True, help="PEM private key")
    sign.add_argument("--version", required=True, help="model version to sign")
    sign.add_argument("--name", help="model name (default: the file name stem)")
    sign.add_argument("--output", "-o", help="write the record here instead of stdout")
    sign.set_defaults(handler=_sign)

    verify = actions.add_parser("verify", help="check MODEL against a signature record")
    verify.add_argument("model")
    verify.add_argument("--signature", required=True, help="record written by `keys sign`")
    verify.add_argument(
        "--trust", action="append", required=True, help="trusted PEM public key (repeatable)"
    )
    verify.set_defaults(handler=_verify)
