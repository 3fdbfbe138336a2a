"""The prompt reader on the real GenEval and PartiPrompts files and on hand-written TXT/CSV/JSON."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from hprune.contracts.prompts import Prompt, read_prompts
from hprune.errors import UserError


@pytest.fixture(scope="module")
def geneval_file(shared_data: Path) -> Path:
    return shared_data / "prompts" / "geneval" / "evaluation_metadata.jsonl"


@pytest.fixture(scope="module")
def parti_file(shared_data: Path) -> Path:
    return shared_data / "prompts" / "parti" / "PartiPrompts.tsv"


def test_geneval_reads_all_prompts_with_tags_and_clauses(geneval_file):
    prompts = read_prompts(geneval_file)
    assert len(prompts) == 553
    assert Counter(p.category for p in prompts) == {
        "single_object": 80,
        "two_object": 99,
        "counting": 80,
        "colors": 94,
        "position": 100,
        "color_attr": 100,
    }
    first = prompts[0]
    assert first == Prompt(
        "geneval-00000",
        "a photo of a bench",
        "single_object",
        first.metadata,
    )
    assert first.metadata["include"] == [{"class": "bench", "count": 1}]
    counting = next(p for p in prompts if p.category == "counting")
    assert "exclude" in counting.metadata
    # GenEval names its image folders by the line index: the id carries it.
    assert prompts[552].prompt_id == "geneval-00552"
    json.dumps([p.metadata for p in prompts])  # metadata stays JSON-serialisable


def test_parti_reads_categories_and_challenges(parti_file):
    prompts = read_prompts(parti_file)
    assert len(prompts) == 1632
    counts = Counter(p.category for p in prompts)
    assert len(counts) == 12
    assert counts["Animals"] == 314
    assert prompts[0].prompt_id == "parti-0000"
    assert prompts[0].text == "bond"
    assert prompts[0].metadata["challenge"] == "Basic"
    assert len({p.prompt_id for p in prompts}) == 1632


def test_ids_are_stable_across_reads(parti_file, geneval_file):
    for path in (parti_file, geneval_file):
        assert read_prompts(path) == read_prompts(path)


def test_per_category_sampling_is_seeded_and_balanced(parti_file):
    full = read_prompts(parti_file)
    sample = read_prompts(parti_file, per_category=3, seed=7)
    assert Counter(p.category for p in sample) == {c: 3 for c in {p.category for p in full}}
    assert sample == read_prompts(parti_file, per_category=3, seed=7)
    assert sample != read_prompts(parti_file, per_category=3, seed=8)
    order = {p.prompt_id: i for i, p in enumerate(full)}
    assert [order[p.prompt_id] for p in sample] == sorted(order[p.prompt_id] for p in sample)


def test_per_category_larger_than_category_keeps_all(geneval_file):
    assert len(read_prompts(geneval_file, per_category=1000)) == 553


def test_hpsv2_list_and_dict(tmp_path):
    photo = tmp_path / "photo.json"
    photo.write_text(json.dumps(["A cat on a mat", "a dog", "a  CAT on a mat "]))
    prompts = read_prompts(photo)
    assert [(p.prompt_id, p.category) for p in prompts] == [
        ("hpsv2-photo-0000", "photo"),
        ("hpsv2-photo-0001", "photo"),
    ]
    both = tmp_path / "benchmark.json"
    both.write_text(json.dumps({"anime": ["a fox"], "paintings": ["a lake", "a hill"]}))
    prompts = read_prompts(both, per_category=1, seed=0)
    assert Counter(p.category for p in prompts) == {"anime": 1, "paintings": 1}


def test_txt_deduplicates_whitespace_and_case(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("a red cube\n\nA  Red cube \nblue sky\n")
    prompts = read_prompts(path)
    assert [p.text for p in prompts] == ["a red cube", "blue sky"]
    # ids come from the text, so inserting a line does not renumber the others
    path.write_text("green grass\na red cube\nblue sky\n")
    again = read_prompts(path)
    assert {p.prompt_id for p in prompts} <= {p.prompt_id for p in again}


def test_csv_with_category_and_extra_columns(tmp_path):
    path = tmp_path / "prompts.csv"
    path.write_text(
        'prompt_id,prompt,category,source\nq1,"a cat, sleeping",animals,me\nq2,a boat,vehicles,me\n'
    )
    prompts = read_prompts(path)
    assert prompts[0] == Prompt("q1", "a cat, sleeping", "animals", {"source": "me"})
    assert prompts[1].category == "vehicles"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("prompts.docx", "a cat\n", "unknown prompt format"),
        ("prompts.txt", "\n  \n", "no prompts"),
        ("prompts.csv", "", "no prompts"),
        ("prompts.csv", "prompt_id,prompt\nq1,a cat\nq1,a dog\n", "appears twice"),
        ("prompts.csv", "id,text\nq1,a cat\n", "needs a header"),
        ("prompts.csv", "prompt_id,prompt\nq1,a cat,extra\n", ":2: expected 2"),
        ("prompts.csv", "prompt_id,prompt\n,a cat\n", "empty prompt_id"),
        ("metadata.jsonl", '{"tag": "x", "prompt": "a"}\n{oops\n', ":2: not a JSON object"),
        ("metadata.jsonl", '{"prompt": "a"}\n', "needs a string 'tag'"),
        ("metadata.jsonl", '{"tag": "x", "prompt": ""}\n', "empty or missing prompt"),
        ("parti.tsv", "Prompt\tCategory\nonly-one-field\n", ":2: expected 2"),
        ("photo.json", '{"a": 1}', "JSON list of prompts"),
        ("photo.json", "[1, 2", "not valid JSON"),
    ],
)
def test_bad_prompt_files_raise_one_line_user_errors(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(UserError, match=message) as info:
        read_prompts(path)
    assert "\n" not in info.value.message


def test_missing_file_and_bad_per_category(tmp_path, geneval_file):
    with pytest.raises(UserError, match="does not exist"):
        read_prompts(tmp_path / "nope.txt")
    with pytest.raises(UserError, match="at least 1"):
        read_prompts(geneval_file, per_category=0)
