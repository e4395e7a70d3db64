"""The reading of a child's lines that the token view's, health check's, captioning's and
comparison's runners share (ui/child_lines.py): lines are handed over whole and once, a
child's end is seen only after its last line was taken, stderr's tail explains a crash
(or its lines are read with stdout's), kill ends it."""
import sys
import time

from lora_studio.ui.child_lines import ChildLines, python_module


def taken_until(child, done, seconds=60):
    got = []
    deadline = time.monotonic() + seconds
    while not done(got) and time.monotonic() < deadline:
        got += child.take()
        time.sleep(0.01)
    return got


def test_every_line_is_taken_once_before_the_child_counts_as_ended():
    child = ChildLines(python_module("this"))   # python -m this: the Zen of Python, then exit 0
    got = taken_until(child, lambda got: child.ended())
    assert child.returncode == 0 and got[0] == "The Zen of Python, by Tim Peters\n"
    assert len(got) == 21 and child.take() == []
    child.close()


def test_stderr_keeps_why_a_child_failed():
    child = ChildLines(python_module("no_such_module_here"), stderr=True)
    taken_until(child, lambda got: child.ended())
    assert child.returncode != 0 and "No module named no_such_module_here" in child.stderr
    child.close()


def test_a_child_is_written_to_and_killed():
    # an interactive console on a pipe
    child = ChildLines(python_module("code"), stdin=True, stderr=True)
    child.write("print(6 * 7)\n")
    said = lambda got: any(line.endswith("42\n") for line in got)  # after the >>> prompt
    assert said(taken_until(child, said))
    assert not child.ended()
    child.kill()
    child.take()   # what it wrote before it was killed (a prompt)
    assert child.ended() and child.returncode != 0


def test_a_merged_stderr_is_read_in_order_with_stdout_from_any_command(tmp_path):
    script = "import sys; print('loading', flush=True); sys.exit('no records, ü')"
    child = ChildLines([sys.executable, "-c", script], merge_stderr=True)
    got = taken_until(child, lambda got: child.ended())
    assert got == ["loading\n", "no records, ü\n"] and child.returncode == 1
    assert child.stderr == ""
    child.close()
