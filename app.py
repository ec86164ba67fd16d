"""tlcore dashboard: the entry point. `streamlit run app.py` opens the home page; pages/ holds one file per page."""

import os

import ui.preload  # noqa: F401  first: every module the pages use, imported once before any session runs a page
import streamlit as st

from tlcore.server.incidents import incident_message, record_incident, visitors_are_remote
from ui.access import require_access
from ui.navigation import ICONS, page_objects, sidebar_links

os.environ["TLCORE_SERVING"] = "1"  # paths now come from visitors: tlcore keeps them under the data roots

st.set_page_config(page_title="tlcore: transfer learning, measured", page_icon=ICONS["app"], layout="wide")


def home() -> None:
    if st.query_params.get("run"):  # a share link: open the stored run on the History page
        st.switch_page(HISTORY, query_params={"run": st.query_params["run"]})
    st.title("Feature extraction, fine-tuning or training from scratch?")
    st.markdown(
        "tlcore answers this for **your** images by running all three on the same split with the same timm "
        "backbone, and shows accuracy, training time and trainable parameters side by side: measured, not guessed.")
    cols = st.columns(3)
    cols[0].subheader("Feature extraction")
    cols[0].markdown("Keep the pretrained backbone frozen and train only a new linear head. Features are computed "
                     "once and cached, so the head trains in seconds.")
    cols[1].subheader("Fine-tuning")
    cols[1].markdown("Start from the pretrained weights and retrain the new head plus the top stages (or all of "
                     "them), with a head warm-up first (LP-FT) and a lower learning rate for the backbone.")
    cols[2].subheader("From scratch")
    cols[2].markdown("The same architecture from random weights, everything trainable: the baseline that tells you "
                     "what pretraining is worth on your data.")
    st.divider()
    st.page_link(COMPARE, label="Compare the three strategies on a dataset", icon=ICONS["Compare"])
    st.page_link(SWEEP, label="Sweep dataset sizes: accuracy vs labelled images per class, and where strategies cross",
                 icon=ICONS["Sweep"])
    st.page_link(RECOMMEND, label="Get a recommendation for your data, with reasons, then confirm it",
                 icon=ICONS["Recommend"])
    st.page_link(PAGES["Backbones"], label="Which backbone, at which image size? Rank them on your data without "
                 "training, then confirm the top ones side by side", icon=ICONS["Backbones"])
    st.page_link(PAGES["Data"], label="Is my data clean? The dataset card, likely label errors and outliers; exclude "
                 "or relabel images without touching the files, and compare before and after", icon=ICONS["Data"])
    st.page_link(HISTORY, label="History: every stored run, share links, reports, bundles", icon=ICONS["History"])
    st.page_link(PAGES["Anatomy"], label="Anatomy: the network as a stack, what each strategy freezes, and where "
                 "pretrained features stop transferring on your data", icon=ICONS["Anatomy"])
    st.caption("The default runs on the bundled Fashion-MNIST subset with tf_efficientnet_lite0 and its packaged "
               "ImageNet weights, entirely offline. Every figure shown comes from a real run whose config and seed "
               "are saved with it and can be re-run with `python -m tlcore compare`.")


PAGE_FILES = [  # (script, title, icon, url path): every file in pages/, and nothing else lives there
    ("pages/1_Compare.py", "Compare", ICONS["Compare"], "Compare"),
    ("pages/2_Sweep.py", "Sweep", ICONS["Sweep"], "Sweep"),
    ("pages/3_Recommend.py", "Recommend", ICONS["Recommend"], "Recommend"),
    ("pages/4_History.py", "History", ICONS["History"], "History"),
    ("pages/5_Anatomy.py", "Anatomy", ICONS["Anatomy"], "Anatomy"),
    ("pages/6_Backbones.py", "Backbones", ICONS["Backbones"], "Backbones"),
    ("pages/7_Data.py", "Data", ICONS["Data"], "Data"),
]
PAGES = page_objects(home, PAGE_FILES)
COMPARE, SWEEP, RECOMMEND, HISTORY = (PAGES[t] for t in ("Compare", "Sweep", "Recommend", "History"))
current = st.navigation(list(PAGES.values()), position="hidden")
remote = visitors_are_remote(st.get_option("server.address"))
if remote:  # errors raised outside a page (a widget's callback) show no traceback either
    st.set_option("client.showErrorDetails", "none")
require_access()
sidebar_links(PAGES)
try:
    current.run()
except Exception as exc:  # st.stop / st.rerun are BaseExceptions and pass through
    if not remote:
        raise  # the operator on localhost keeps Streamlit's full details
    st.error(incident_message(record_incident(exc)))
