"""WikiHop: ReAct/HotpotQA-style multi-hop questions over a fictional encyclopedia.

A small encyclopedia of people, cities, countries and organisations is generated from the
seed (fictional names, so a model cannot answer from memory). Actions, as in ReAct's
Wikipedia environment:

- ``search[entity]``: open the entity's page and show its first sentences; an unknown
  title answers with similar titles;
- ``lookup[keyword]``: the next sentence of the open page containing the keyword;
- ``finish[answer]``: submit; reward 1 for an exact match (after HotpotQA normalisation).

Facts a question needs are sometimes beyond the first sentences, so ``lookup`` matters.
The oracle knows the chain of pages behind the question.
"""

from __future__ import annotations

import difflib
import re
import string
from typing import Any

import cv2
import numpy as np

from studio.envs.base import ActionCheck, OptionSpec, StudioEnv, _shorten
from studio.envs.registry import register_env

ACTION_PATTERN = re.compile(r"^\s*(search|lookup|finish)\s*\[(.*)\]\s*$", re.IGNORECASE | re.DOTALL)
SUMMARY_SENTENCES = 3
SYLLABLES = [
    "ka",
    "lo",
    "mir",
    "ven",
    "ta",
    "ro",
    "sel",
    "dan",
    "quo",
    "bri",
    "na",
    "tor",
    "el",
    "vas",
    "um",
    "cor",
    "li",
    "zen",
    "pa",
    "dro",
    "fen",
    "mar",
    "is",
    "tav",
    "or",
    "gla",
    "hew",
    "yn",
]
OCCUPATIONS = [
    "cartographer",
    "composer",
    "engineer",
    "botanist",
    "painter",
    "architect",
    "astronomer",
    "novelist",
    "chemist",
    "sculptor",
]
INDUSTRIES = ["shipping", "textile", "publishing", "glassworks", "railway", "observatory", "seed bank", "clockmaking"]
KNOWN_FOR = [
    "a series of tidal maps",
    "an unfinished symphony",
    "a collapsible bridge",
    "a catalogue of mosses",
    "murals of the old harbour",
    "a treatise on bells",
    "a lighthouse design",
    "a dictionary of knots",
]
RIVERS = ["Amber", "Silt", "Heron", "Copper", "Willow", "Slate", "Otter", "Fennel"]
CURRENCIES = ["crown", "mark", "florin", "drachma", "thaler", "guilder"]
LOOKUP_WORDS = ["born", "founded", "capital", "mayor", "headquarters", "located", "married", "river", "known"]

FRAME_W, FRAME_H = 720, 300


def normalize_answer(text: str) -> str:
    """HotpotQA's exact-match normalisation: lower case, no punctuation, articles or extra spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


class _Names:
    """Unique fictional names from syllables."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.used: set[str] = set()

    def word(self, low: int = 2, high: int = 3) -> str:
        while True:
            count = int(self.rng.integers(low, high + 1))
            word = "".join(SYLLABLES[int(i)] for i in self.rng.integers(len(SYLLABLES), size=count)).capitalize()
            if word not in self.used and len(word) >= 4:
                self.used.add(word)
                return word


def _build_world(seed: int) -> dict[str, dict[str, Any]]:
    """The encyclopedia for ``seed``: title -> {kind, facts...}; sentences are written later."""
    rng = np.random.default_rng([seed, 7])
    names = _Names(rng)
    world: dict[str, dict[str, Any]] = {}
    countries = [names.word() + "ia" for _ in range(4)]
    cities: list[str] = []
    for country in countries:
        members = [names.word() + suffix for suffix in rng.choice(["port", "holm", "ford", "gate", "mere"], size=3)]
        cities += members
        world[country] = {
            "kind": "country",
            "capital": members[0],
            "currency": str(rng.choice(CURRENCIES)),
            "cities": members,
        }
        for city in members:
            world[city] = {
                "kind": "city",
                "country": country,
                "founded": int(rng.integers(900, 1700)),
                "river": str(rng.choice(RIVERS)),
            }
    people = [f"{names.word(2, 2)} {names.word()}" for _ in range(12)]
    for person in people:
        world[person] = {
            "kind": "person",
            "born_in": str(rng.choice(cities)),
            "born": int(rng.integers(1850, 1990)),
            "occupation": str(rng.choice(OCCUPATIONS)),
            "known_for": str(rng.choice(KNOWN_FOR)),
        }
    for index, person in enumerate(people):
        world[person]["spouse"] = people[(index + 1) % len(people)] if index % 2 == 0 else people[index - 1]
    for city in cities:
        world[city]["mayor"] = str(rng.choice(people))
    founders = rng.choice(people, size=7, replace=False)
    for founder in founders:
        industry = str(rng.choice(INDUSTRIES))
        org = f"{founder.split()[1]} {industry.title()} Company"
        year = world[founder]["born"] + int(rng.integers(20, 50))
        world[org] = {
            "kind": "organisation",
            "industry": industry,
            "founder": str(founder),
            "headquarters": str(rng.choice(cities)),
            "founded": year,
        }
        world[str(founder)]["founded_org"] = org
    return world


def _page(title: str, facts: dict[str, Any], rng: np.random.Generator) -> list[str]:
    """Sentences of a page; facts after the first ``SUMMARY_SENTENCES`` need ``lookup``."""
    surname = title.split()[-1]
    kind = facts["kind"]
    if kind == "person":
        lead = f"{title} is {_article(facts['occupation'])} {facts['occupation']} known for {facts['known_for']}."
        rest = [
            f"{surname} was born in {facts['born_in']} in {facts['born']}.",
            f"{surname} is married to {facts['spouse']}.",
            f"{surname} spent several years abroad before returning home.",
            f"Critics have called {surname}'s early work uneven.",
        ]
        if "founded_org" in facts:
            rest.append(f"{surname} founded the {facts['founded_org']}.")
    elif kind == "organisation":
        lead = f"The {title} is a {facts['industry']} business."
        rest = [
            f"It was founded by {facts['founder']} in {facts['founded']}.",
            f"Its headquarters are in {facts['headquarters']}.",
            "The company has changed hands twice since its creation.",
            "Its archives are open to researchers by appointment.",
        ]
    elif kind == "city":
        lead = f"{title} is a city on the {facts['river']} river."
        rest = [
            f"{title} is located in {facts['country']}.",
            f"The mayor of {title} is {facts['mayor']}.",
            f"{title} was granted a charter in {facts['founded']}.",
            "Its old market square is a popular meeting place.",
        ]
    else:
        lead = f"{title} is a country whose currency is the {facts['currency']}."
        rest = [
            f"The capital of {title} is {facts['capital']}.",
            f"Other cities of {title} include {facts['cities'][1]} and {facts['cities'][2]}.",
            f"{title} has a long tradition of river trade.",
            "Its parliament meets twice a year.",
        ]
    order = rng.permutation(len(rest))
    return [lead] + [rest[int(i)] for i in order]


def _question(world: dict[str, dict[str, Any]], hops: int, rng: np.random.Generator) -> dict[str, Any]:
    """A question, its answer and its chain of (page, lookup keyword) hops."""
    orgs = sorted(t for t, f in world.items() if f["kind"] == "organisation")
    people = sorted(t for t, f in world.items() if f["kind"] == "person")
    cities = sorted(t for t, f in world.items() if f["kind"] == "city")
    countries = sorted(t for t, f in world.items() if f["kind"] == "country")
    pick = lambda items: items[int(rng.integers(len(items)))]  # noqa: E731 - tiny local helper
    template = int(rng.integers(4 if hops == 2 else 3))
    if hops == 2:
        if template == 0:
            org = pick(orgs)
            founder = world[org]["founder"]
            return {
                "text": f"In which city was the founder of the {org} born?",
                "answer": world[founder]["born_in"],
                "chain": [[org, "founded"], [founder, "born"]],
            }
        if template == 1:
            org = pick(orgs)
            city = world[org]["headquarters"]
            return {
                "text": f"In which country does the {org} have its headquarters?",
                "answer": world[city]["country"],
                "chain": [[org, "headquarters"], [city, "located"]],
            }
        if template == 2:
            city = pick(cities)
            mayor = world[city]["mayor"]
            return {
                "text": f"In which city was the mayor of {city} born?",
                "answer": world[mayor]["born_in"],
                "chain": [[city, "mayor"], [mayor, "born"]],
            }
        founder = pick([p for p in people if "founded_org" in world[p]])
        org = world[founder]["founded_org"]
        return {
            "text": f"In what year was the company founded by {founder} established?",
            "answer": str(world[org]["founded"]),
            "chain": [[founder, "founded"], [org, "founded"]],
        }
    if template == 0:
        org = pick(orgs)
        founder = world[org]["founder"]
        city = world[founder]["born_in"]
        return {
            "text": f"In which country was the founder of the {org} born?",
            "answer": world[city]["country"],
            "chain": [[org, "founded"], [founder, "born"], [city, "located"]],
        }
    if template == 1:
        person = pick(people)
        city = world[person]["born_in"]
        country = world[city]["country"]
        return {
            "text": f"What is the capital of the country where {person} was born?",
            "answer": world[country]["capital"],
            "chain": [[person, "born"], [city, "located"], [country, "capital"]],
        }
    country = pick(countries)
    capital = world[country]["capital"]
    mayor = world[capital]["mayor"]
    return {
        "text": f"In which city was the mayor of the capital of {country} born?",
        "answer": world[mayor]["born_in"],
        "chain": [[country, "capital"], [capital, "mayor"], [mayor, "born"]],
    }


class WikiHop(StudioEnv):
    """Multi-hop question answering with search, lookup and finish over a generated encyclopedia."""

    name = "wikihop"
    action_summary = "text: search[entity], lookup[keyword], finish[answer]"
    option_specs = (OptionSpec("hops", int, 2, "Pages the answer needs to chain through (2 or 3).", choices=(2, 3)),)

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.seed_used: int | None = None
        self.pages: dict[str, list[str]] = {}
        self.question: dict[str, Any] = {}
        self.page: str | None = None
        self.lookup_keyword: str | None = None
        self.lookup_index = 0
        self.searched: list[str] = []
        self.looked_up: list[list[str]] = []
        self.done = False
        self.last_result = ""

    def _generate(self, seed: int) -> None:
        world = _build_world(seed)
        rng = np.random.default_rng([seed, 11])
        self.pages = {title: _page(title, facts, rng) for title, facts in sorted(world.items())}
        self.question = _question(world, self.options["hops"], np.random.default_rng([seed, 13, self.options["hops"]]))
        self.seed_used = seed

    def _reset(self, seed: int, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        self._generate(seed)
        self.page, self.lookup_keyword, self.lookup_index = None, None, 0
        self.searched, self.looked_up, self.done = [], [], False
        self.last_result = f"Question: {self.question['text']}"
        self.instruction = (
            "Answer the question with interleaving Thought and Action steps, using an encyclopedia "
            "of a fictional world (do not rely on memory). Actions: search[entity] opens the page of "
            "an entity and shows its first sentences; lookup[keyword] shows the next sentence of the "
            "open page containing the keyword; finish[answer] submits the answer and ends the task. "
            f"Question: {self.question['text']}"
        )
        return self.last_result, {"success": False}

    # -- actions ------------------------------------------------------------------------
    def valid_actions(self) -> None:
        return None

    def validate_action(self, action: str) -> ActionCheck:
        if not isinstance(action, str) or not action.strip():
            return ActionCheck(None, "The action is empty.")
        match = ACTION_PATTERN.match(action)
        if match is None:
            return ActionCheck(
                None, f"'{_shorten(action)}' is not of the form search[...], lookup[...] or finish[...]."
            )
        verb, argument = match.group(1).lower(), " ".join(match.group(2).split())
        if not argument:
            return ActionCheck(None, f"{verb}[...] needs a non-empty argument.")
        return ActionCheck(f"{verb}[{argument}]")

    def sample_action(self, rng: np.random.Generator) -> str:
        roll = rng.random()
        if roll < 0.1:
            titles = sorted(self.pages)
            return f"finish[{titles[int(rng.integers(len(titles)))]}]"
        if roll < 0.4:
            return f"lookup[{LOOKUP_WORDS[int(rng.integers(len(LOOKUP_WORDS)))]}]"
        mentioned = [t for t in sorted(self.pages) if t in self.last_result] or sorted(self.pages)
        return f"search[{mentioned[int(rng.integers(len(mentioned)))]}]"

    def _find_title(self, query: str) -> str | None:
        wanted = normalize_answer(query)
        return next((t for t in self.pages if normalize_answer(t) == wanted), None)

    def _step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self.done:
            return "The episode is over.", 0.0, True, False, {"success": False}
        verb, argument = action[: action.index("[")], action[action.index("[") + 1 : -1]
        if verb == "search":
            title = self._find_title(argument)
            if title is None:
                similar = difflib.get_close_matches(argument, list(self.pages), n=5, cutoff=0.3)
                observation = f"Could not find [{argument}]. Similar: {similar}."
            else:
                self.page, self.lookup_keyword, self.lookup_index = title, None, 0
                if title not in self.searched:
                    self.searched.append(title)
                observation = " ".join(self.pages[title][:SUMMARY_SENTENCES])
        elif verb == "lookup":
            observation = self._lookup(argument)
        else:
            correct = normalize_answer(argument) == normalize_answer(self.question["answer"])
            self.done = True
            reward = 1.0 if correct else 0.0
            verdict = "correct" if correct else "incorrect"
            return (
                f"Episode finished: your answer is {verdict}. Reward = {reward:g}.",
                reward,
                True,
                False,
                {"success": correct, "answer": self.question["answer"]},
            )
        self.last_result = observation
        return observation, 0.0, False, False, {"success": False}

    def _lookup(self, keyword: str) -> str:
        if self.page is None:
            return "No page is open. Use search[entity] first."
        if keyword.lower() != (self.lookup_keyword or "").lower():
            self.lookup_keyword, self.lookup_index = keyword, 0
        matches = [s for s in self.pages[self.page] if keyword.lower() in s.lower()]
        if [self.page, keyword.lower()] not in self.looked_up:
            self.looked_up.append([self.page, keyword.lower()])
        if self.lookup_index >= len(matches):
            return "No more results."
        self.lookup_index += 1
        return f"(Result {self.lookup_index} / {len(matches)}) {matches[self.lookup_index - 1]}"

    # -- expert ------------------------------------------------------------------------------
    def expert_action(self) -> str:
        for title, keyword in self.question["chain"]:
            if title not in self.searched:
                return f"search[{title}]"
            fact_index = next(i for i, s in enumerate(self.pages[title]) if keyword in s.lower())
            if fact_index >= SUMMARY_SENTENCES and [title, keyword] not in self.looked_up:
                if self.page != title:
                    return f"search[{title}]"
                return f"lookup[{keyword}]"
        return f"finish[{self.question['answer']}]"

    # -- snapshots -------------------------------------------------------------------------------
    def _get_state(self) -> dict[str, Any]:
        return {
            "page": self.page,
            "lookup_keyword": self.lookup_keyword,
            "lookup_index": self.lookup_index,
            "searched": list(self.searched),
            "looked_up": [list(pair) for pair in self.looked_up],
            "last_result": self.last_result,
        }

    def _set_state(self, state: dict[str, Any]) -> None:
        if state["seed"] != self.seed_used:
            self._generate(state["seed"])
        self.page, self.lookup_keyword, self.lookup_index = (
            state["page"],
            state["lookup_keyword"],
            state["lookup_index"],
        )
        self.searched = list(state["searched"])
        self.looked_up = [list(pair) for pair in state["looked_up"]]
        self.last_result = state["last_result"]
        self.last_observation = state["last_result"]

    # -- frame ---------------------------------------------------------------------------------------
    def _render_frame(self) -> np.ndarray:
        """The question, the pages visited so far and the open page."""
        frame = np.full((FRAME_H, FRAME_W, 3), (248, 247, 242), dtype=np.uint8)
        font, ink = cv2.FONT_HERSHEY_SIMPLEX, (40, 42, 54)
        y = 28
        for line in _wrap(f"Q: {self.question.get('text', '')}", 80):
            cv2.putText(frame, line, (14, y), font, 0.55, ink, 1, cv2.LINE_AA)
            y += 24
        cv2.putText(frame, "Pages visited:", (14, y + 12), font, 0.48, (120, 124, 140), 1, cv2.LINE_AA)
        y += 36
        for title in self.searched[-6:]:
            colour = (214, 55, 62) if title == self.page else ink
            cv2.rectangle(frame, (16, y - 14), (24, y - 6), colour, -1)
            cv2.putText(frame, title, (32, y - 4), font, 0.48, colour, 1, cv2.LINE_AA)
            y += 24
        if not self.searched:
            cv2.putText(frame, "(none yet)", (32, y - 4), font, 0.48, (120, 124, 140), 1, cv2.LINE_AA)
        return frame


def _article(word: str) -> str:
    return "an" if word[0].lower() in "aeiou" else "a"


def _wrap(text: str, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        if len(line) + len(word) + 1 > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return lines + ([line] if line else [])


register_env(
    "wikihop",
    WikiHop,
    summary="Multi-hop questions over a fictional encyclopedia: search, lookup, finish.",
    default_max_steps=20,
)
