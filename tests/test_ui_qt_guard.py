import subprocess
import sys
import textwrap


def test_many_qt_calls_do_not_abort_the_interpreter():
    # On PySide6 6.12.0 with Python 3.11 each void method call drops a reference to
    # None and each emit() one to True; some thousands of them used to end the
    # process with "none_dealloc" / "bool_dealloc".
    code = textwrap.dedent("""
        import sys
        import lora_studio.ui
        from lora_studio.ui.qt_guard import _Probe
        probe = _Probe()
        for _ in range(50_000):
            probe.ping.emit()
            probe.setObjectName("x")
        print("survived")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "survived" in out.stdout, out.stderr[-2000:]
