"""Scanning model files before their first serve (issue 10 item 7).

Pickle-based weights (`.bin`, `.pt`, `.pth`, `.ckpt`, `.pkl`) can run any code when
loaded; safetensors files cannot, but a header whose offsets point outside the file
crashes or misleads parsers. `scanner.py` asks picklescan about pickles (raw, and the
zip archives torch writes), `safetensors.py` checks headers, `view.py` gives both a
seekable read-only file over the bytes where they already are (a verified spool, or the
chunk store through a manifest) so no second copy is made, and `quarantine.py` is the
serve-path gate that decides, records and audits.
"""
