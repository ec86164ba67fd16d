"""The token gate of the dashboard (when it asks for one: see tlcore.server.access): the token comes from the link
(`?token=...`) or is typed once, and is kept for the browser session. A wrong one says so, and is slowed down."""

from __future__ import annotations

import streamlit as st

from tlcore.server.access import access_link, check_token, token_required

_announced = False
WRONG = "Wrong token"


def _announce(address: str, port: int) -> None:
    """Print the tokened link in the server's console once, as Jupyter does when it starts."""
    global _announced
    if not _announced:
        _announced = True
        print(f"\n  tlcore: this server asks visitors for an access token. Open:\n"
              f"  {access_link(address, port)}\n", flush=True)


def _client() -> str:
    """The visitor's address for the wrong-token count; Streamlit gives None for localhost (and so behind a proxy on
    this machine, where every visitor then shares one count)."""
    return st.context.ip_address or "localhost"


def _grant() -> None:
    st.session_state["tlcore_access"] = True


def _link_token_accepted() -> bool:
    """Check `?token=` once and take it off the address bar, right or wrong; a wrong one is remembered to be shown."""
    given = st.query_params.get("token")
    if given is None:
        return False
    del st.query_params["token"]
    if check_token(given, _client()):
        return True
    st.session_state["tlcore_wrong_token"] = "the link's token"
    return False


def _typed_token_accepted(typed: str) -> bool:
    """Check a typed token once per value: reruns do not count the same wrong token again."""
    if not typed or typed == st.session_state.get("tlcore_typed_checked"):
        return False
    st.session_state["tlcore_typed_checked"] = typed
    if check_token(typed, _client()):
        return True
    st.session_state["tlcore_wrong_token"] = "the token typed"
    return False


def require_access() -> None:
    """Stop the page here unless this session has shown the token."""
    address, port = st.get_option("server.address"), st.get_option("server.port")
    if not token_required(address) or st.session_state.get("tlcore_access"):
        return
    _announce(address, port)
    if _link_token_accepted():
        _grant()
        return
    st.title("Access token needed")
    st.write("This tlcore server runs jobs for its visitors, so it asks for the access token that was printed in "
             "its console when it started (or set as TLCORE_TOKEN). Ask the person who runs it for the link.")
    typed = st.text_input("Access token", type="password", key="tlcore_token_input")
    if _typed_token_accepted(typed):
        _grant()
        st.rerun()
    wrong = st.session_state.get("tlcore_wrong_token")
    if wrong:
        st.error(f"{WRONG}: {wrong} is not this server's. Check the link, or ask the person who runs this server "
                 "for it (it is TLCORE_TOKEN, or the one in $TLCORE_HOME/server-token).")
    st.stop()
