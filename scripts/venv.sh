# Sourced by serve.sh and test.sh: create .venv when missing and install model-mirror
# into it with the extras named in $1 ("" or "[test]").
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e ".$1"
