"""Data sources: a folder, a manifest or WebDataset shards, seen as groups of videos."""

from __future__ import annotations

import gc
import io
import json
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

import av
import media
import pytest
import webdataset as wds

from datamodules.errors import DataPathError, DataSourceError
from datamodules.shards import ShardSource
from datamodules.sources import FileSource, LocalVideo, SourceConfig, VideoRef, open_source


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A tiny real mp4 (32 px, 1 s, with audio)."""
    return media.write_av_clip(tmp_path_factory.mktemp("clip") / "clip.mp4").read_bytes()


@pytest.fixture
def temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`tempfile.gettempdir()` for this test, so the shard source's temporary files can be seen."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    """A tar file holding ``members`` (name, data) in this order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def video_bytes(key: str) -> bytes:
    return f"video of {key}".encode()


def write_shard(path: Path, keys: list[str]) -> Path:
    """A shard whose samples hold an mp4 member (``video_bytes(key)``) and a ``cls`` label."""
    members = []
    for i, key in enumerate(keys):
        members += [(f"{key}.mp4", video_bytes(key)), (f"{key}.cls", str(i).encode())]
    return write_tar(path, members)


def read_all(source, group: int, skip: int = 0) -> list[tuple[LocalVideo, bytes | None]]:
    """Every item of a group, with its file's bytes read while the item is current."""
    items = []
    for video in source.videos(group, skip):
        data = Path(video.path).read_bytes() if video.path and os.path.exists(video.path) else None
        items.append((video, data))
    return items


# --- auto-detection ---------------------------------------------------------------------------

def test_auto_detects_folder_manifest_and_shards(tmp_path: Path) -> None:
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "a.mp4").write_bytes(b"x")
    (tmp_path / "m.csv").write_text("path\nvideos/a.mp4\n")
    (tmp_path / "m.jsonl").write_text('{"path": "videos/a.mp4"}\n')
    for i in range(2):
        write_shard(tmp_path / f"s-{i}.tar", [f"k{i}"])

    def opened(path: Path | str):
        return open_source(SourceConfig(path=str(path)))

    assert opened(tmp_path / "videos").description == f"folder {tmp_path / 'videos'} (1 files)"
    assert opened(tmp_path / "m.csv").description == f"manifest {tmp_path / 'm.csv'} (1 videos)"
    assert opened(tmp_path / "m.jsonl").description == f"manifest {tmp_path / 'm.jsonl'} (1 videos)"
    single = opened(tmp_path / "s-0.tar")
    assert isinstance(single, ShardSource) and single.group_sizes() == [1]
    pattern = opened(f"{tmp_path}/s-{{0..1}}.tar")
    assert isinstance(pattern, ShardSource) and pattern.description == f"2 shards {tmp_path}/s-{{0..1}}.tar (2 samples)"
    joined = opened(f"{tmp_path}/s-0.tar::{tmp_path}/s-1.tar")
    assert joined.shards == [f"{tmp_path}/s-0.tar", f"{tmp_path}/s-1.tar"]


def test_auto_rejects_a_file_of_unknown_kind(tmp_path: Path) -> None:
    video = tmp_path / "a.mp4"
    video.write_bytes(b"x")
    with pytest.raises(DataSourceError, match=r"data\.source\.path=.*cannot tell .* data\.source\.kind"):
        open_source(SourceConfig(path=str(video)))


# --- folders ----------------------------------------------------------------------------------

def test_folder_lists_recursively_sorted_with_the_extension_filter(tmp_path: Path) -> None:
    for name in ["b.mp4", "a dir/ünï c.MKV", "a dir/.hidden.mp4", ".cache/d.mp4", "notes.txt"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    source = open_source(SourceConfig(kind="folder", path=str(tmp_path)))
    names = [str(tmp_path / "a dir" / "ünï c.MKV"), str(tmp_path / "b.mp4")]
    assert source.group_sizes() == [1, 1]
    assert [list(source.videos(g)) for g in range(2)] == [[LocalVideo(VideoRef(n), n)] for n in names]
    assert list(source.videos(1, skip=1)) == []
    source.videos(0).close()  # every source's videos() can be closed early, as the stream does
    only_mkv = open_source(SourceConfig(path=str(tmp_path), extensions=[".mkv"]))
    assert [v.path for v in only_mkv.videos(0)] == [names[0]] and only_mkv.group_sizes() == [1]


def test_the_fingerprint_changes_with_the_files_not_with_the_folders_place(tmp_path: Path) -> None:
    """What a resumed epoch checks (datamodules/pretrain.py): names and sizes, without decoding."""
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "a.mp4").write_bytes(b"x")
    (tmp_path / "m.csv").write_text("path\nvideos/a.mp4\n")
    write_shard(tmp_path / "s-0.tar", ["k0"])

    def fingerprint(path: Path | str) -> dict:
        return open_source(SourceConfig(path=str(path))).fingerprint()

    before = {path: fingerprint(path) for path in (tmp_path / "videos", tmp_path / "m.csv", tmp_path / "s-0.tar")}
    assert [f["videos"] for f in before.values()] == [1, 1, 1]
    shutil.copytree(tmp_path / "videos", tmp_path / "moved")
    assert fingerprint(tmp_path / "moved") == before[tmp_path / "videos"]  # names relative to the folder
    (tmp_path / "videos" / "a.mp4").write_bytes(b"xy")  # replaced by a file of another size
    assert fingerprint(tmp_path / "videos") != before[tmp_path / "videos"]
    assert fingerprint(tmp_path / "m.csv") != before[tmp_path / "m.csv"]
    (tmp_path / "videos" / "b.mp4").write_bytes(b"x")
    assert fingerprint(tmp_path / "videos")["videos"] == 2
    write_shard(tmp_path / "s-0.tar", ["k0", "k1"])
    assert fingerprint(tmp_path / "s-0.tar") != before[tmp_path / "s-0.tar"]


# --- manifests --------------------------------------------------------------------------------

def test_csv_manifest_windows_labels_paths_and_bom(tmp_path: Path) -> None:
    manifest = tmp_path / "lists" / "train set.csv"
    manifest.parent.mkdir()
    missing = tmp_path / "gone.mp4"
    manifest.write_text(
        "path,start_s,end_s,label,notes\n"
        "vidéos/a b.mp4,0,2.5,dog,first half\n"
        "vidéos/a b.mp4,2.5,,cat,\n"
        f"{missing},,,,\n",
        encoding="utf-8-sig",  # with a BOM, as Excel writes it
    )
    source = open_source(SourceConfig(path=str(manifest)))
    relative = str(manifest.parent / "vidéos" / "a b.mp4")
    assert isinstance(source, FileSource) and source.group_sizes() == [1, 1, 1]
    assert [v for g in range(3) for v in source.videos(g)] == [
        LocalVideo(VideoRef(relative, 0.0, 2.5, "dog"), relative),
        LocalVideo(VideoRef(relative, 2.5, None, "cat"), relative),
        LocalVideo(VideoRef(str(missing)), str(missing)),  # missing files are the decoder's business
    ]


def test_jsonl_manifest_skips_blank_lines_and_reads_numbers_and_nulls(tmp_path: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        '{"path": "a.mp4", "start_s": 1, "end_s": 3.5, "label": 7, "extra": [1]}\n'
        "\n"
        '{"path": "/abs/b.mp4", "start_s": null, "label": null}\n',
        encoding="utf-8",
    )
    source = open_source(SourceConfig(kind="manifest", path=str(manifest)))
    assert [v.ref for g in range(2) for v in source.videos(g)] == [
        VideoRef(str(tmp_path / "a.mp4"), 1.0, 3.5, "7"),
        VideoRef("/abs/b.mp4"),
    ]


@pytest.mark.parametrize("name, text, line, fragment", [
    ("m.csv", "", 1, "has no 'path' column"),
    ("m.csv", "file,start_s\na.mp4,0\n", 1, "has no 'path' column"),
    ("m.csv", "path,start_s\na.mp4,0\nb.mp4,abc\n", 3, "start_s='abc' is not a number"),
    ("m.csv", "path,start_s\na.mp4,-1\n", 2, "start_s=-1.0 is negative"),
    ("m.csv", "path,start_s,end_s\na.mp4,0,1\nb.mp4,2,1\n", 3, "end_s=1.0 is not after start_s=2.0"),
    ("m.csv", "path,end_s\na.mp4,0\n", 2, "end_s=0.0 is not after start_s=0.0"),
    ("m.csv", "path,label\n,dog\n", 2, "path=''"),
    ("m.jsonl", '{"path": "a.mp4"}\n\n{"path": \n', 3, "not valid JSON"),
    ("m.jsonl", "[1, 2]\n", 1, "is not a JSON object"),
    ("m.jsonl", '{"path": "a.mp4", "end_s": true}\n', 1, "end_s=True is not a number"),
    ("m.jsonl", '{"path": "a.mp4", "label": {"x": 1}}\n', 1, "expected a string or a number"),
    ("m.jsonl", '{"file": "a.mp4"}\n', 1, "path=None"),
])
def test_bad_manifest_names_file_line_and_expectation(tmp_path: Path, name: str, text: str, line: int,
                                                     fragment: str) -> None:
    manifest = tmp_path / name
    manifest.write_text(text, encoding="utf-8")
    with pytest.raises(DataSourceError) as caught:
        open_source(SourceConfig(path=str(manifest)), key="probe.source")
    message = str(caught.value)
    assert f"probe.source.path={manifest}, line {line}: " in message
    assert fragment in message and "expected" in message


def test_manifest_that_is_not_utf8(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_bytes("path\ncafé.mp4\n".encode("latin-1"))
    with pytest.raises(DataSourceError, match="not UTF-8 text.*save the manifest as UTF-8"):
        open_source(SourceConfig(path=str(manifest)))


# --- shards -----------------------------------------------------------------------------------

@pytest.fixture
def three_shards(tmp_path: Path) -> tuple[str, list[list[str]]]:
    """Shards ``part-{0..2}.tar`` in a folder with a space and non-ASCII letters; their keys."""
    keys = [["s0_0", "s0_1"], ["s1_0", "vidéo 1", "s1_2"], ["s2_0"]]
    folder = tmp_path / "my shards ü"
    for i, shard_keys in enumerate(keys):
        write_shard(folder / f"part-{i}.tar", shard_keys)
    return f"{folder}/part-{{0..2}}.tar", keys


def test_shards_counts_keys_labels_and_video_members(three_shards, temp_dir: Path) -> None:
    pattern, keys = three_shards
    source = open_source(SourceConfig(path=pattern))
    assert source.group_sizes() == [2, 3, 1]
    assert source.description == f"3 shards {pattern} (6 samples)"
    for group, shard_keys in enumerate(keys):
        shard = pattern.replace("{0..2}", str(group))
        items = read_all(source, group)
        assert [v.ref for v, _ in items] == [VideoRef(f"{shard}:{k}", label=str(i)) for i, k in enumerate(shard_keys)]
        assert [data for _, data in items] == [video_bytes(k) for k in shard_keys]
        assert all(v.error is None and v.path.endswith(".mp4") and Path(v.path).parent == temp_dir
                   for v, _ in items)
    assert list(temp_dir.iterdir()) == []  # each temporary file is gone once the next item is asked for


def test_shard_video_is_a_decodable_file(tmp_path: Path, clip: bytes, temp_dir: Path) -> None:
    shard = write_tar(tmp_path / "s.tar", [("a.mp4", clip)])
    videos = open_source(SourceConfig(path=str(shard))).videos(0)
    video = next(videos)  # its file lives while `videos` does
    with av.open(video.path) as container:
        assert len(container.streams.video) == 1 and len(container.streams.audio) == 1


def test_shard_temp_file_lives_until_the_next_item(three_shards, temp_dir: Path) -> None:
    source = open_source(SourceConfig(path=three_shards[0]))
    videos = source.videos(1)
    first = next(videos)
    assert os.path.exists(first.path)
    second = next(videos)
    assert not os.path.exists(first.path) and os.path.exists(second.path)
    videos.close()
    assert not os.path.exists(second.path) and list(temp_dir.iterdir()) == []


def test_abandoned_shard_iterator_removes_its_temp_file(three_shards, temp_dir: Path) -> None:
    source = open_source(SourceConfig(path=three_shards[0]))
    videos = source.videos(0)
    path = next(videos).path
    assert os.path.exists(path)
    del videos
    gc.collect()
    assert not os.path.exists(path) and list(temp_dir.iterdir()) == []


@pytest.mark.parametrize("skip", [0, 1, 2, 3])
def test_shard_skip_writes_no_temp_file_for_skipped_samples(three_shards, temp_dir: Path, skip: int,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    pattern, keys = three_shards
    source = open_source(SourceConfig(path=pattern))
    written = []
    real_mkstemp = tempfile.mkstemp

    def spy(*args, **kwargs) -> tuple[int, str]:
        fd, path = real_mkstemp(*args, **kwargs)
        written.append(path)
        return fd, path

    monkeypatch.setattr(tempfile, "mkstemp", spy)
    items = read_all(source, 1, skip=skip)
    assert [v.ref.name.rsplit(":", 1)[1] for v, _ in items] == keys[1][skip:]
    assert [data for _, data in items] == [video_bytes(k) for k in keys[1][skip:]]
    assert len(written) == 3 - skip


def test_shard_skip_and_group_out_of_range(three_shards) -> None:
    source = open_source(SourceConfig(path=three_shards[0]))
    with pytest.raises(ValueError, match="skip=4"):
        source.videos(1, skip=4)
    with pytest.raises(IndexError, match="group 3"):
        source.videos(3)


def test_sample_without_video_member_is_an_error_item(tmp_path: Path, temp_dir: Path) -> None:
    shard = write_tar(tmp_path / "s.tar", [
        ("a.mp4", b"A"), ("a.json", json.dumps({"label": 5}).encode()),
        ("b.txt", b" hello \n"), ("b.json", b"{}"),
        ("c.video.MP4", b"C"), ("c.txt", b"caption"), ("c.cls", b"2"), ("c.json", json.dumps({"label": "x"}).encode()),
        ("d.webm", b"D"), ("d.json", b"not json"),
    ])
    source = open_source(SourceConfig(path=str(shard), extensions=[".mp4", ".webm"]))
    items = read_all(source, 0)
    assert source.group_sizes() == [4] and len(items) == 4
    assert [v.ref.label for v, _ in items] == ["5", "hello", "2", None]  # cls, else txt, else json
    assert [data for _, data in items] == [b"A", None, b"C", b"D"]
    missing, _ = items[1]
    assert missing.path is None and missing.error.reason == "no_video"
    assert missing.error.path == f"{shard}:b" and "members: txt, json" in missing.error.detail
    assert items[3][0].path.endswith(".webm")


def test_shard_counts_follow_webdataset_key_rule(tmp_path: Path, temp_dir: Path) -> None:
    shard = write_tar(tmp_path / "odd.tar", [
        ("__meta__", b"skipped by webdataset"),
        ("__meta__/info.json", b"{}"),  # under a "__*__" folder: skipped too
        ("README", b"no key: skipped"),
        ("train/x.video.mp4", b"X"), ("train/x.cls", b"1"),
        ("a.mp4", b"A1"), ("b.mp4", b"B"), ("a.cls", b"3"),  # "a" again after "b": a new sample
        ("c d.mp4", b"C"),
    ])
    source = open_source(SourceConfig(path=str(shard)))
    ours = [v.ref.name.split(":", 1)[1] for v in source.videos(0)]
    theirs = [s["__key__"] for s in wds.WebDataset(str(shard), shardshuffle=False)]
    assert ours == theirs == ["train/x", "a", "b", "a", "c d"]
    assert source.group_sizes() == [5]


def test_truncated_shard_keeps_exact_counts(tmp_path: Path, temp_dir: Path) -> None:
    keys = ["s0", "s1", "s2", "s3"]
    full = write_tar(tmp_path / "full.tar", [(f"{k}.mp4", bytes(3000)) for k in keys]).read_bytes()
    cut_at = tarfile.open(tmp_path / "full.tar").getmember("s2.mp4").offset_data + 1500
    shard = tmp_path / "cut.tar"
    shard.write_bytes(full[:cut_at])
    source = open_source(SourceConfig(path=str(shard)))
    assert source.group_sizes() == [3]  # s3 is gone entirely; s2's header is there, its data is not
    items = list(source.videos(0))
    # webdataset hands a sample over once it sees the next key, so s1 is lost with s2's first member
    assert [v.error is None for v in items] == [True, False, False]
    assert [v.ref.name for v in items] == [f"{shard}:{k}" for k in keys[:3]]
    assert all(v.error.reason == "unreadable" and "truncated or corrupt shard" in v.error.detail
               for v in items[1:])
    assert [v.ref.name for v in source.videos(0, skip=2)] == [f"{shard}:s2"]
    assert list(temp_dir.iterdir()) == []


def test_any_truncation_yields_exactly_the_listed_count(tmp_path: Path, temp_dir: Path) -> None:
    full = write_shard(tmp_path / "full.tar", [f"k{i}" for i in range(4)]).read_bytes()
    for cut in range(0, len(full), 397):
        shard = tmp_path / f"cut{cut}.tar"
        shard.write_bytes(full[:cut])
        source = open_source(SourceConfig(path=str(shard)))
        (size,) = source.group_sizes()
        for skip in range(size + 1):
            items = list(source.videos(0, skip))
            failed = [v.error is not None for v in items]
            assert len(items) == size - skip, (cut, skip)
            assert failed == sorted(failed), (cut, skip)  # good samples first, then the unread rest
    assert list(temp_dir.iterdir()) == []


def test_unreadable_and_missing_shards_are_groups_of_one_error(tmp_path: Path, temp_dir: Path) -> None:
    write_shard(tmp_path / "p-0.tar", ["a", "b"])
    media.write_random_bytes(tmp_path / "p-1.tar")
    source = open_source(SourceConfig(path=f"{tmp_path}/p-{{0..2}}.tar"))  # p-2.tar does not exist
    assert source.group_sizes() == [2, 1, 1]
    assert source.description == f"3 shards {tmp_path}/p-{{0..2}}.tar (2 samples, 2 unreadable)"
    for group in (1, 2):
        (item,) = source.videos(group)
        assert item.path is None and item.error.reason == "unreadable"
        assert item.ref.name == f"{tmp_path}/p-{group}.tar"
    assert list(source.videos(1, skip=1)) == []


# --- errors -----------------------------------------------------------------------------------

@pytest.mark.parametrize("config, error, pattern", [
    (SourceConfig(), DataPathError, r"data\.source\.path=None: is not set; set data\.source\.path to a folder"),
    (SourceConfig(path="/no/such/folder"), DataPathError, r"data\.source\.path=/no/such/folder: does not exist"),
    (SourceConfig(path="/no/such/m.csv"), DataPathError, r"data\.source\.path=/no/such/m\.csv: does not exist"),
    (SourceConfig(kind="folder", path="/no/such"), DataPathError, r"data\.source\.path=/no/such: does not exist"),
    (SourceConfig(path="/no/s-{0..2}.tar"), DataPathError, r"matches no file \(it expands to 3 paths"),
    (SourceConfig(kind="zip", path="/x"), DataSourceError, r"data\.source\.kind=zip: must be one of"),
    (SourceConfig(path="/x", extensions=[]), DataSourceError, r"data\.source\.extensions is empty"),
])
def test_config_errors_name_the_key(config: SourceConfig, error: type, pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        open_source(config)


@pytest.mark.parametrize("kind, target, problem", [
    ("manifest", "folder", "is a folder"),
    ("shards", "folder", "is a folder"),
    ("folder", "m.csv", "is a file"),
    ("manifest", "notes.txt", "is neither a .csv nor a .jsonl file"),
])
def test_kind_that_does_not_fit_the_path(tmp_path: Path, kind: str, target: str, problem: str) -> None:
    (tmp_path / "folder").mkdir()
    (tmp_path / "m.csv").write_text("path\na.mp4\n")
    (tmp_path / "notes.txt").write_text("a.mp4\n")
    with pytest.raises(DataSourceError, match=f"my.src.kind={kind} but my.src.path=.*{problem}"):
        open_source(SourceConfig(kind=kind, path=str(tmp_path / target)), key="my.src")
