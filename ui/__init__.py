"""The dashboard's shared widgets and result panels: pages import these; these import tlcore."""
