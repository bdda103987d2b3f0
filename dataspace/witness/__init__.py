"""An independent witness for transparency logs (C2SP tlog-witness, cosignature/v1).

Meant to be run by someone other than the operator (a regulator, an industry association, a partner): its
own Ed25519 key and its own SQLite state in its own data directory; it never reads the server's database.
It cosigns a log's checkpoint only with a valid consistency proof from the last one it cosigned, so an
operator cannot show two different logs (a split view) or roll its log back without the witness refusing.
Run it with ``dataspace witness serve``.
"""

from dataspace.witness._server import make_server
from dataspace.witness._state import Verdict, WitnessRefusal, WitnessState, load_or_create_key

__all__ = ["Verdict", "WitnessRefusal", "WitnessState", "load_or_create_key", "make_server"]
