"""Reference templates: PAM50 provisioning and resolution (``pam50``), SCT's template folder
layout and its ``info_label.txt`` (``sct_layout``)."""
