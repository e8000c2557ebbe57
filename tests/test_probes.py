"""Probe files: the three formats, and errors that name the file and line."""
import pytest

from recall_core.errors import ProbeFileError
from recall_core.probes import from_texts, load_probe_file, load_probe_files


def write(tmp_path, name, content, mode="w"):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def test_txt_lines_and_blocks(tmp_path):
    lines = load_probe_file(write(tmp_path, "news.txt", "first text\nsecond text\n"))
    assert lines.texts == ["first text", "second text"] and lines.tasks == ["news", "news"]
    blocks = load_probe_file(write(tmp_path, "poems.txt", "line one\nline two\n\n\nother block\n"))
    assert blocks.texts == ["line one\nline two", "other block"]


def test_jsonl_and_csv_fields(tmp_path):
    jsonl = load_probe_file(write(tmp_path, "a.jsonl", '{"text": "2+2=", "task": "math", "answer": "4"}\n\n'
                                                        '{"text": "hello"}\n'))
    assert [(i.text, i.task, i.answer) for i in jsonl.items] == [("2+2=", "math", "4"), ("hello", "a", None)]
    csv = load_probe_file(write(tmp_path, "b.csv", 'text,task,answer\n"x, y",t1,7\nplain,,\n'))
    assert [(i.text, i.task, i.answer) for i in csv.items] == [("x, y", "t1", "7"), ("plain", "b", None)]
    both = load_probe_files([tmp_path / "a.jsonl", tmp_path / "b.csv"])
    assert len(both) == 4 and both.task_names == ["math", "a", "t1", "b"]


@pytest.mark.parametrize("name, content, message", [
    ("bad.jsonl", '{"text": "ok"}\n{"text": \n', r"bad\.jsonl, line 2: not valid JSON"),
    ("bad.jsonl", '{"text": "ok"}\n{"task": "x"}\n', r"bad\.jsonl, line 2: missing or empty 'text'"),
    ("bad.jsonl", '["a list"]\n', r"line 1: expected a JSON object"),
    ("bad.csv", "question,answer\nq,a\n", r"bad\.csv, line 1: the header needs a 'text' column"),
    ("bad.csv", "text,task\nok,t\nx,t,extra\n", r"bad\.csv, line 3: wrong number of fields"),
    ("empty.txt", "\n\n  \n", r"empty\.txt: no texts"),
    ("data.xml", "<a/>", r"unsupported probe file type"),
])
def test_errors_name_file_and_line(tmp_path, name, content, message):
    with pytest.raises(ProbeFileError, match=message):
        load_probe_file(write(tmp_path, name, content))


def test_non_utf8_is_a_clear_error(tmp_path):
    path = write(tmp_path, "latin.txt", "caf\u00e9 ok\nna\u00efve\n".encode("latin-1"))
    with pytest.raises(ProbeFileError, match=r"latin\.txt, line 1: not UTF-8.*0xe9"):
        load_probe_file(path)


def test_missing_file_and_empty_list(tmp_path):
    with pytest.raises(ProbeFileError, match="not found"):
        load_probe_file(tmp_path / "nope.txt")
    with pytest.raises(ProbeFileError, match="no probe files"):
        load_probe_files([])
    with pytest.raises(ProbeFileError, match="no texts"):
        from_texts(["", "  "])


def test_content_hash_tracks_content_not_file_names(tmp_path):
    a = load_probe_file(write(tmp_path, "x.jsonl", '{"text": "a", "task": "t"}\n'))
    b = load_probe_file(write(tmp_path, "y.jsonl", '{"text": "a", "task": "t"}\n'))
    c = load_probe_file(write(tmp_path, "z.jsonl", '{"text": "b", "task": "t"}\n'))
    assert a.content_hash() == b.content_hash() != c.content_hash()
