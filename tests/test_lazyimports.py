"""The CLI's deferred imports: the BLS modules, the node daemon and the demo are not loaded by
starting the command, and everything that does use BLS still gets the real modules. Each
check runs in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def run(code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_starting_the_command_loads_no_bls_tables_nor_the_node() -> None:
    loaded = run(
        """
        import sys
        import nuclux.cli.main
        from eth_account import Account
        late = ("nuclux.node.daemon", "nuclux.demo", "nuclux.node.localnet")
        print(sorted(m for m in sys.modules if "bls12_381" in m and "optimized" in m or m in late))
        """
    )
    assert loaded == "[]"  # nor the node daemon or the demo: the commands that run them load them


def test_whatever_uses_bls_gets_the_real_modules() -> None:
    out = run(
        """
        import nuclux.cli  # the stand-ins
        from eth_account import Account
        import eth_keyfile.keyfile as keyfile
        from nuclux.lazyimports import BLS12_381_ORDER

        key = Account.create().key
        sealed = Account.encrypt(key, "pw", kdf="scrypt", iterations=16)
        assert Account.decrypt(sealed, "pw") == key
        public = keyfile.bls.SkToPk(5)  # a BLS keystore's public key: loads py_ecc.bls
        from eth.precompiles.bls12_381 import bls12_381_g2  # the EVM's BLS precompiles
        from py_ecc.bls import G2ProofOfPossession
        from py_ecc.bls12_381 import curve_order
        import py_ecc.optimized_bls12_381 as real
        assert public == G2ProofOfPossession.SkToPk(5)
        assert curve_order == BLS12_381_ORDER == real.curve_order
        assert keyfile.MAX_V4_PRIVATE_KEY == curve_order - 1
        print(G2ProofOfPossession.__name__, len(public))
        """
    )
    assert out == "G2ProofOfPossession 48"
