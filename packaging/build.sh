#!/usr/bin/env bash
# Build or install LoRA Studio for users.
#
#   packaging/build.sh slim         CLI bundle without torch/Qt, then smoke-test it (~1 min; CI-sized)
#   packaging/build.sh full         the GUI app bundle with torch, then smoke-test it (GBs, ~10 min)
#   packaging/build.sh smoke KIND   smoke-test an existing slim / full bundle again
#   packaging/build.sh desktop      install the Linux menu entry and icons for this user
#
# Bundles go to build/pyinstaller/dist/, or to $LORA_STUDIO_BUILD_DIR/dist/ when that
# is set (the test suite builds into a temp folder). Needs: pip install -e ".[package]"
# in the interpreter that builds, $PYTHON (default: the active venv's, else python3).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${LORA_STUDIO_BUILD_DIR:-$ROOT/build/pyinstaller}"
case "$OUT" in /*) ;; *) OUT="$PWD/$OUT" ;; esac  # relative to where it was started
cd "$ROOT"

# The interpreter whose packages go into the bundle: $PYTHON when set (the test suite
# passes its own), else the active virtual environment's, else python3 on PATH.
if [ -z "${PYTHON:-}" ]; then
    if [ -n "${VIRTUAL_ENV:-}" ] && [ -x "$VIRTUAL_ENV/bin/python" ]; then
        PYTHON="$VIRTUAL_ENV/bin/python"
    else
        PYTHON="$(command -v python3 || command -v python || true)"
    fi
fi

pyinstaller_build() {
    if [ -z "$PYTHON" ] || ! "$PYTHON" -c "" 2>/dev/null; then
        echo "No Python interpreter found (PYTHON='${PYTHON}'). Set PYTHON to the interpreter" \
             "LoRA Studio is installed in, e.g. PYTHON=.venv/bin/python $0 $1" >&2
        exit 2
    fi
    if ! "$PYTHON" -c "import PyInstaller" 2>/dev/null; then
        echo "PyInstaller is not installed for $PYTHON." \
             "Install it with: \"$PYTHON\" -m pip install -e \".[package]\"" >&2
        exit 2
    fi
    "$PYTHON" -m PyInstaller --noconfirm --log-level WARN \
        --distpath "$OUT/dist" --workpath "$OUT/work" packaging/lora_studio.spec "${@:2}"
}

# The demo preset copied into a folder with a space and non-ASCII characters, as on
# Windows, with its model and dataset paths made absolute.
smoke_preset() {
    local dir="$OUT/smoke/Mes données"
    mkdir -p "$dir"
    sed "s|\"\\.\\./resources/|\"$ROOT/resources/|" "$ROOT/presets/demo-text-tiny.toml" > "$dir/essai ç.toml"
    echo "$dir/essai ç.toml"
}

smoke() {
    local app="$OUT/dist/$1/$1"
    "$app" --help >/dev/null
    "$app" check "$(smoke_preset)"
    # A preset that does not validate: exit code 1 and the findings, no traceback.
    local broken="$OUT/smoke/Mes données/cassé.toml"
    sed 's|^path = "\(.*\)chat.jsonl"|path = "\1absent.jsonl"|' "$(smoke_preset)" > "$broken"
    local status=0
    "$app" check "$broken" > "$OUT/smoke/broken.txt" 2>&1 || status=$?
    if [ "$status" != 1 ] || ! grep -q "absent.jsonl" "$OUT/smoke/broken.txt" \
            || grep -q Traceback "$OUT/smoke/broken.txt"; then
        cat "$OUT/smoke/broken.txt" >&2
        echo "broken preset: expected exit code 1 and a message naming absent.jsonl, got $status" >&2
        exit 1
    fi
    # The interpreter form the engine is started with (sys.executable -u -m ...).
    "$app" -u -m lora_studio --help >/dev/null
    if [ "$1" = lora-studio ]; then
        # Two training steps in two processes: torch, peft and accelerate launch (which
        # starts this executable again as its workers), all from the bundle.
        rm -rf "$OUT/smoke/runs"
        (cd "$OUT/smoke" && "$app" train "$(smoke_preset)" --processes 2 \
            --set training.max_steps=2 --set output.sample_every_n_steps=0 \
            --set "output.output_dir=$OUT/smoke/runs")
        ls "$OUT"/smoke/runs/*/exports/*/adapter_model.safetensors >/dev/null
    fi
    du -sh "$OUT/dist/$1"
    echo "bundle OK: $app"
}

case "${1:-}" in
    slim)
        pyinstaller_build slim -- --slim
        smoke lora-studio-slim
        ;;
    full)
        pyinstaller_build full
        smoke lora-studio
        ;;
    smoke)
        case "${2:-}" in
            slim) smoke lora-studio-slim ;;
            full) smoke lora-studio ;;
            *) echo "usage: $0 smoke slim|full" >&2; exit 2 ;;
        esac
        ;;
    desktop)
        data="${XDG_DATA_HOME:-$HOME/.local/share}"
        for png in resources/icons/lora-studio-*.png; do
            size="${png##*-}"; size="${size%.png}"
            install -Dm644 "$png" "$data/icons/hicolor/${size}x${size}/apps/lora-studio.png"
        done
        install -Dm644 packaging/lora-studio.desktop "$data/applications/lora-studio.desktop"
        command -v update-desktop-database >/dev/null && update-desktop-database "$data/applications" || true
        echo "installed $data/applications/lora-studio.desktop"
        ;;
    *)
        sed -n '2,10p' "$0"
        exit 2
        ;;
esac
