# make demo: set everything up, then build, check, unpack, run and repack a small image.
# make test: set everything up, then lint and run the whole test suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint peers venv bench clean

venv: $(STAMP) $(BIN)/.ocibox-runtime-launcher
	@# bytecode written ahead: with PYTHONDONTWRITEBYTECODE set (as on these machines)
	@# every command would otherwise compile its modules again (~35 ms a start)
	$(BIN)/python -m compileall -q src

# ocibox-runtime started with python -I -S, no site and no re (scripts/ocibox-runtime):
# installed over pip's console script of the same name, which keeps working elsewhere.
# @SRC@: where the ocibox package is; @PYTHON@: Debian's statically linked python3.X
# when it is the venv's version, bytecode and all, and has the runtime's modules
# (checked here, once), else the venv's.
LAUNCHER_CHECK := import sys, importlib.util, ctypes, _json, fcntl, select, termios, resource, \
	socket, struct, signal, subprocess, tty, pwd, json; print(sys.version_info[:2], importlib.util.MAGIC_NUMBER)
$(BIN)/.ocibox-runtime-launcher: scripts/ocibox-runtime $(STAMP)
	py=$(CURDIR)/$(BIN)/python; \
	fast=$$($$py -c 'import sys; print("/usr/bin/python%d.%d" % sys.version_info[:2])'); \
	want=$$($$py -IS -c '$(LAUNCHER_CHECK)'); \
	if [ -x "$$fast" ] && [ "$$($$fast -IS -c '$(LAUNCHER_CHECK)' 2>/dev/null)" = "$$want" ]; then py=$$fast; fi; \
	src=$$($(BIN)/python -c 'import ocibox, os; print(os.path.dirname(os.path.dirname(ocibox.__file__)))'); \
	sed -e "s|@PYTHON@|$$py|" -e "s|@SRC@|$$src|" scripts/ocibox-runtime > $(BIN)/ocibox-runtime.tmp
	chmod 755 $(BIN)/ocibox-runtime.tmp
	mv $(BIN)/ocibox-runtime.tmp $(BIN)/ocibox-runtime
	touch $@

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

peers:
	scripts/install-peers.sh

lint: venv
	$(BIN)/ruff check src tests bench

test: venv peers lint
	$(BIN)/pytest -q

demo: venv peers
	PATH=$(CURDIR)/$(BIN):$$PATH scripts/demo.sh

bench: venv peers
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python bench/unpack.py
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python bench/registry.py --results bench/RESULTS.md
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python bench/copy_images.py --write

clean:
	rm -rf $(VENV) demo build *.egg-info src/*.egg-info
