"""Names of a run: the layout decides, a row's path wins, and no two URLs share a file."""

from __future__ import annotations

from pathlib import PurePosixPath

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st

from fetchcli.models import Expectation, Job
from fetchcli.names import NameBook, Namer, Naming, dedupe_key


def url(text: str) -> httpx.URL:
    return httpx.URL(text)


def test_the_layout_names_and_a_row_path_wins():
    target = url("https://a.test/x/y/data.bin")
    assert str(Naming().path_for(target)) == "a.test/x/y/data.bin"
    assert str(Naming(cut_dirs=1).path_for(target)) == "a.test/y/data.bin"
    assert str(Naming(layout="flat").path_for(target)) == "data.bin"
    assert str(Naming(layout="flat").path_for(target, "mine/d.bin")) == "mine/d.bin"
    assert str(Naming().path_for(target, "")) == "a.test/x/y/data.bin"
    assert str(Naming().path_for(target, "..")) == "a.test/x/y/data.bin"  # no name left


def test_only_layouts_that_can_collide_need_a_book():
    assert not Naming().needs_book
    assert Naming(layout="flat").needs_book
    assert Naming(cut_dirs=2).needs_book


def test_the_first_url_keeps_the_plain_name_and_a_second_gets_a_hash():
    book = NameBook()
    name = PurePosixPath("data.bin")
    first = book.claim(name, url("https://a.test/1/data.bin"))
    second = book.claim(name, url("https://b.test/2/data.bin"))
    third = book.claim(name, url("https://c.test/3/data.bin"))
    assert first == name
    assert second.name.startswith("data~") and second.suffix == ".bin"
    assert len({first, second, third}) == 3


def test_the_same_url_asking_again_gets_the_same_name():
    book = NameBook()
    name = PurePosixPath("d/data.bin")
    one, two = url("https://a.test/data.bin"), url("https://b.test/data.bin")
    assert book.claim(name, one) == book.claim(name, one) == name
    hashed = book.claim(name, two)
    assert book.claim(name, two) == hashed != name
    assert book.claim(name, url("https://a.test/data.bin#frag")) == name  # the same resource


def test_names_that_differ_only_in_case_are_kept_apart():
    book = NameBook()
    book.claim(PurePosixPath("Data.bin"), url("https://a.test/Data.bin"))
    other = book.claim(PurePosixPath("data.bin"), url("https://a.test/data.bin"))
    assert other != PurePosixPath("data.bin") and other.parent == PurePosixPath(".")


def test_a_hashed_name_never_takes_a_name_another_url_holds():
    book = NameBook()
    a, b = url("https://a.test/f.txt"), url("https://b.test/f.txt")
    book.claim(PurePosixPath("f.txt"), a)
    hashed = book.claim(PurePosixPath("f.txt"), b)
    # A row that asks for exactly that hashed name, for a third URL, gets a name of its own.
    third = book.claim(hashed, url("https://c.test/g.txt"))
    assert third not in (hashed, PurePosixPath("f.txt"))
    assert len(book) == 3


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["a.test", "b.test"]), st.sampled_from(["x", "y", "z", "X"])),
        max_size=30,
    )
)
def test_flat_names_never_meet_for_different_urls(pairs: list[tuple[str, str]]) -> None:
    naming, book = Naming(layout="flat"), NameBook()
    given_names: dict[str, PurePosixPath] = {}
    for host, segment in pairs:
        target = url(f"https://{host}/{segment}/file.bin")
        name = book.claim(naming.path_for(target), target)
        key = str(target)
        assert given_names.setdefault(key, name) == name  # stable for the same URL
    folded = [str(name).casefold() for name in given_names.values()]
    assert len(folded) == len(set(folded))


def row_job(text: str, path: str | None = None, line: int = 1) -> Job:
    expect = None if path is None else Expectation(path=path)
    return Job("m", line, text, url(text), expect)


def test_a_plain_list_in_the_tree_is_not_named_at_all():
    namer = Namer(Naming())
    plain = row_job("https://a.test/x")
    assert namer.name(plain) is plain  # the fetcher works out the tree name: nothing kept


def test_a_manifest_run_books_every_name_so_rows_and_tree_names_never_meet():
    namer = Namer(Naming(), rows=True)
    tree = namer.name(row_job("https://a.test/x"))
    taken = namer.name(row_job("https://b.test/y", "a.test/x"))  # asks for the tree name
    assert tree.relpath == PurePosixPath("a.test/x")
    assert taken.relpath is not None and taken.relpath.name.startswith("x~")


def test_a_row_path_without_a_book_starts_one():
    namer = Namer(Naming())
    first = namer.name(row_job("https://a.test/1", "same.txt"))
    second = namer.name(row_job("https://a.test/2", "same.txt"))
    assert first.relpath == PurePosixPath("same.txt") and second.relpath != first.relpath


def test_the_dedupe_key_is_the_url_and_a_rows_own_path():
    plain, named = row_job("https://a.test/x#frag"), row_job("https://a.test/x", "n.txt")
    assert dedupe_key(plain) == dedupe_key(row_job("https://a.test/x"))
    assert dedupe_key(named) != dedupe_key(plain)
    assert dedupe_key(named) == dedupe_key(row_job("https://a.test/x", "n.txt"))
