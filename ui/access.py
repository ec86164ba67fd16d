"""The token gate of a writable dashboard that listens beyond localhost (see tlcore.server.access): the token comes
from the link (`?token=...`) or is typed once, and is kept for the browser session."""

from __future__ import annotations

import streamlit as st

from tlcore.server.access import access_link, token_matches, token_required

_announced = False


def _announce(address: str, port: int) -> None:
    """Print the tokened link in the server's console once, as Jupyter does when it starts."""
    global _announced
    if not _announced:
        _announced = True
        print(f"\n  tlcore: this server listens beyond localhost and asks visitors for a token. Open:\n"
              f"  {access_link(address, port)}\n", flush=True)


def require_access() -> None:
    """Stop the page here unless this session has shown the token."""
    address, port = st.get_option("server.address"), st.get_option("server.port")
    if not token_required(address) or st.session_state.get("tlcore_access"):
        return
    _announce(address, port)
    if token_matches(st.query_params.get("token")):
        st.session_state["tlcore_access"] = True
        del st.query_params["token"]
        return
    st.title("Access token needed")
    st.write("This tlcore server runs jobs for its visitors, so it asks for the access token that was printed in "
             "its console when it started (or set as TLCORE_TOKEN). Ask the person who runs it for the link.")
    typed = st.text_input("Access token", type="password", key="tlcore_token_input")
    if typed:
        if token_matches(typed):
            st.session_state["tlcore_access"] = True
            st.rerun()
        st.error("That token is not right. Check the link or ask the person who runs this server.")
    st.stop()
