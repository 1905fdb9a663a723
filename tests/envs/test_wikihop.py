"""WikiHop: search, lookup, finish, exact match, action forms."""

from __future__ import annotations

import pytest

from studio.envs.wikihop import SUMMARY_SENTENCES, WikiHop, normalize_answer


def world(hops: int = 2) -> WikiHop:
    env = WikiHop(hops=hops)
    env.reset(seed=2)
    return env


def test_search_shows_the_first_sentences_of_a_page() -> None:
    env = world()
    title = env.question["chain"][0][0]
    observation, *_ = env.step(f"search[{title.upper()}]")
    assert observation == " ".join(env.pages[title][:SUMMARY_SENTENCES])
    assert env.page == title


def test_unknown_search_suggests_similar_titles() -> None:
    env = world()
    title = env.question["chain"][0][0]
    observation, *_ = env.step(f"search[{title[:-2]}]")
    assert observation.startswith(f"Could not find [{title[:-2]}]. Similar:") and title in observation


def test_lookup_walks_through_matches_then_says_no_more() -> None:
    env = world()
    assert env.step("lookup[born]")[0].startswith("No page is open")
    person = next(t for t, page in env.pages.items() if sum("born" in s.lower() for s in page) == 1)
    env.step(f"search[{person}]")
    first = env.step("lookup[born]")[0]
    assert first.startswith("(Result 1 / 1)") and "born in" in first
    assert env.step("lookup[born]")[0] == "No more results."


@pytest.mark.parametrize("hops", [2, 3])
def test_finish_rewards_exact_match_only(hops: int) -> None:
    env = world(hops)
    answer = env.question["answer"]
    observation, reward, terminated, _truncated, info = env.step(f"finish[ the {answer.lower()}. ]")
    assert (reward, terminated, info["success"]) == (1.0, True, True)
    env.reset(seed=2)
    observation, reward, terminated, _truncated, info = env.step("finish[somewhere else]")
    assert (reward, terminated, info["success"]) == (0.0, True, False) and "incorrect" in observation


def test_action_forms_are_checked() -> None:
    env = world()
    assert env.validate_action("Search[ Foo  Bar ]").action == "search[Foo Bar]"
    for bad, reason in [("search Foo", "form"), ("finish[]", "non-empty"), ("jump[x]", "form")]:
        check = env.validate_action(bad)
        assert not check.valid and reason in check.reason


def test_questions_need_their_chain_and_some_need_lookup() -> None:
    needs_lookup = 0
    for seed in range(30):
        env = WikiHop(hops=3)
        env.reset(seed=seed)
        chain = env.question["chain"]
        assert len(chain) == 3
        for title, keyword in chain:
            index = next(i for i, s in enumerate(env.pages[title]) if keyword in s.lower())
            needs_lookup += index >= SUMMARY_SENTENCES
    assert needs_lookup > 10  # lookup is a real part of the task, not decoration


def test_normalize_answer_is_hotpotqa_style() -> None:
    assert normalize_answer("  The Umtavia! ") == "umtavia"
    assert normalize_answer("an  Apple, a day") == "apple day"
