"""hostio: the host's bounded, link-refusing reader of workspaces; and the one mountinfo parser."""

from __future__ import annotations

import os
import socket
import time

import pytest

from mappa_envs.workspace import budget, hostio, mountinfo


@pytest.fixture
def ws(tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    (root / "ok.csv").write_text("id,y\n1,2\n")
    return root


def test_reads_a_regular_file(ws):
    assert hostio.read_bytes(ws, "ok.csv", 100) == b"id,y\n1,2\n"


def test_missing_file_is_file_not_found(ws):
    with pytest.raises(FileNotFoundError):
        hostio.read_bytes(ws, "nope.csv", 100)


def test_symlink_is_refused_and_its_target_not_quoted(ws, tmp_path):
    secret = tmp_path / "answers-secret.csv"
    secret.write_text("the answers")
    os.symlink(secret, ws / "sub.csv")
    with pytest.raises(hostio.Refused) as e:
        hostio.read_bytes(ws, "sub.csv", 100)
    assert "symbolic link" in str(e.value) and "answers-secret" not in str(e.value)


def test_symlinked_parent_folder_is_refused(ws, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.csv").write_text("secret")
    os.symlink(outside, ws / "dir")
    with pytest.raises(hostio.Refused, match="parent folder"):
        hostio.read_bytes(ws, "dir/x.csv", 100)


@pytest.mark.parametrize("rel", ["../ws/ok.csv", "/etc/passwd", "", "a/../../x"])
def test_paths_leaving_the_workspace_are_refused(ws, rel):
    with pytest.raises(hostio.Refused, match="relative path"):
        hostio.read_bytes(ws, rel, 100)


def test_hard_link_is_refused(ws):
    os.link(ws / "ok.csv", ws / "twin.csv")
    with pytest.raises(hostio.Refused, match="hard link"):
        hostio.read_bytes(ws, "twin.csv", 100)


def test_fifo_is_refused_without_blocking(ws):
    os.mkfifo(ws / "pipe.csv")
    start = time.monotonic()
    with pytest.raises(hostio.Refused, match="FIFO"):
        hostio.read_bytes(ws, "pipe.csv", 100)
    assert time.monotonic() - start < 1


def test_socket_is_refused(ws):
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(ws / "sock.csv"))
    try:
        with pytest.raises(hostio.Refused, match="socket"):
            hostio.read_bytes(ws, "sock.csv", 100)
    finally:
        s.close()


def test_sparse_file_counts_at_its_apparent_size(ws):
    with open(ws / "sparse.csv", "wb") as f:
        f.truncate(10 * 1024**3)
    with pytest.raises(hostio.Refused, match="over the 1048576-byte limit"):
        hostio.read_bytes(ws, "sparse.csv", 1 << 20)


def test_walk_is_bounded_in_entries_depth_and_lists_specials_as_other(ws):
    os.mkfifo(ws / "pipe")
    os.symlink("/", ws / "root")
    deep = ws
    for _ in range(60):
        deep = deep / "d"
        deep.mkdir()
    w = hostio.walk(ws, max_entries=1000, max_depth=10)
    kinds = {e.rel: e.kind for e in w.entries}
    assert kinds["ok.csv"] == "file" and kinds["pipe"] == "other" and kinds["root"] == "other"
    assert max(e.rel.count("/") for e in w.entries) < 10 and w.stopped == "stopped at the depth limit"
    many = ws / "many"
    many.mkdir()
    for i in range(300):
        (many / str(i)).touch()
    w = hostio.walk(ws, max_entries=50)
    assert len(w.entries) == 50 and "50 entries" in (w.stopped or "")
    assert "ok.csv" in {e.rel for e in w.entries}  # breadth first: the top level is never crowded out


def test_copy_tree_copies_files_and_leaves_traps_behind(ws, tmp_path):
    (ws / "sub").mkdir()
    (ws / "sub" / "a.txt").write_text("a")
    os.mkfifo(ws / "pipe")
    os.symlink("/proc/self/environ", ws / "env")
    with open(ws / "sparse.bin", "wb") as f:
        f.truncate(8 * 1024**3)
    dst = tmp_path / "dst"
    dst.mkdir()
    start = time.monotonic()
    report = hostio.copy_tree(ws, dst, hostio.CopyLimits(max_file_bytes=1 << 20))
    assert time.monotonic() - start < 5
    assert sorted(p.name for p in dst.rglob("*")) == ["a.txt", "ok.csv", "sub"]
    assert report.files == 2 and len(report.skipped) == 3


def test_move_tree_renames_on_one_filesystem(ws, tmp_path):
    os.mkfifo(ws / "pipe")
    dst = tmp_path / "dst"
    dst.mkdir()
    report = hostio.move_tree(ws, dst)
    assert report.skipped == [] and sorted(os.listdir(dst)) == ["ok.csv", "pipe"] and os.listdir(ws) == []


def test_mountinfo_parser_undoes_octal_escapes():
    text = (
        "36 35 98:0 / /mnt/my\\040dir rw,noatime master:1 - tmpfs mappa-quota-77 rw,size=1024k\n"
        "37 35 0:30 /kube/pod /sys/fs/cgroup/memory rw shared:9 - cgroup cgroup rw,memory\n"
        "garbage line\n"
    )
    a, b = mountinfo.parse(text)
    assert (a.mount_point, a.fstype, a.source) == ("/mnt/my dir", "tmpfs", "mappa-quota-77")
    assert (b.root, b.fstype, b.super_options) == ("/kube/pod", "cgroup", "rw,memory")


def test_memory_budget_is_sized_from_the_machine_and_overridable(monkeypatch):
    assert 0 < budget.total_bytes() <= budget.host_bytes()
    budget.total_bytes.cache_clear()
    monkeypatch.setenv(budget.ENV_VAR, "lots")
    try:
        with pytest.raises(budget.MemoryBudgetError, match="not a number of GiB"):
            budget.total_bytes()
        monkeypatch.setenv(budget.ENV_VAR, "2")
        budget.total_bytes.cache_clear()
        with pytest.raises(budget.MemoryBudgetError, match="asks for 3 GiB.*budget.*2 GiB"):
            budget.check(3 * budget.GiB, "the sandbox")
    finally:
        monkeypatch.delenv(budget.ENV_VAR)
        budget.total_bytes.cache_clear()


def test_remove_tree_handles_deep_trees_and_never_follows_links(tmp_path):
    keep = tmp_path / "outside"
    keep.mkdir()
    (keep / "precious.txt").write_text("x")
    victim = tmp_path / "victim"
    victim.mkdir()
    os.symlink(keep, victim / "link")
    os.mkfifo(victim / "pipe")
    fd = os.open(victim, os.O_RDONLY)
    for _ in range(3000):  # deeper than PATH_MAX allows as one path, and than Python's recursion limit
        os.mkdir("d", dir_fd=fd)
        os.close(os.open("f", os.O_CREAT | os.O_WRONLY, dir_fd=fd))
        nfd = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    os.close(fd)
    start = time.monotonic()
    hostio.remove_tree(victim)
    assert time.monotonic() - start < 20
    assert not victim.exists() and (keep / "precious.txt").read_text() == "x"
