"""Deterministic generator of the sandbox's shared world: tests, learners and attempts.

One seed gives the same world every time, so tests, the demo and benchmarks are repeatable. Both
simulators are built from one ``World``: iMocha serves its tests, invitations and reports; Degreed
knows the same learners as users, except a few who have not been provisioned in Degreed yet.
"""

from __future__ import annotations

import random
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

FIRST_NAMES = [
    "Amelia", "José", "Zoë", "Ngọc", "Łukasz", "Søren", "Aïcha", "Chen", "Priya", "Oluwaseun",
    "Mateo", "Ingrid", "Hiroshi", "Fatima", "Liam", "Noa", "Ravi", "Élodie", "Kwame", "Sofía",
    "Dmitri", "Aroha", "Björn", "Mei", "Tomás", "Ananya", "Yusuf", "Chloé", "Nikolai", "Amara",
]
LAST_NAMES = [
    "O'Brien", "García", "Nguyễn", "Kowalski", "Ødegaard", "Diallo", "Wang", "Sharma", "Adeyemi",
    "Müller", "Tanaka", "Al-Sayed", "Smith", "Cohen", "Iyer", "Dubois", "Mensah", "Fernández",
    "Ivanov", "Ngata", "Lindqvist", "Zhang", "Costa-Silva", "Rao", "Yılmaz", "Lefèvre", "Petrov",
    "Okafor", "van der Berg", "Kim",
]
# Test names include the awkward characters launch links must survive: spaces, &, ?, /, #, unicode.
TEST_NAMES = [
    "Python Fundamentals",
    "Java L2 — Collections & Streams",
    "SQL for Analysts",
    "Cloud Security (AWS)? Core",
    "Communication écrite en français",
    "C# / .NET Core",
    "Data Structures & Algorithms",
    "Kubernetes Basics #1",
    "Excel 365 for Finance",
    "商务英语 Business English",
    "React + TypeScript",
    "Machine Learning 101",
    "Agile Project Management",
    "Go Concurrency",
    "Customer Service Skills",
    "Linux Administration",
]
SKILL_POOL = [
    "Python", "Core Java", "SQL", "Data Modeling", "Cloud Security", "Written Communication",
    ".NET", "Algorithms", "Kubernetes", "Excel", "Business English", "React", "TypeScript",
    "Machine Learning", "Agile", "Go", "Customer Empathy", "Linux", "Networking", "Statistics",
]
PERFORMANCE_BANDS = [(85.0, "Expert"), (70.0, "Experienced"), (50.0, "Passed"), (0.0, "Needs improvements")]

STATUS_COMPLETE = "Complete"
STATUS_TEST_LEFT = "Test Left"
STATUS_TERMINATED = "Terminated"


@dataclass
class QuestionBank:
    """A skill (question bank) inside a test; reports score candidates per bank."""

    qb_id: int
    qb_name: str
    section_id: int
    section_name: str
    questions: int
    max_score: float


@dataclass
class TestLink:
    test_link_id: int
    test_link: str
    name: str
    status: str = "active"  # active | inactive
    invitation_type: str = "open"


@dataclass
class TestSpec:
    test_id: int
    name: str
    duration: int  # minutes
    status: str
    labels: list[str]
    banks: list[QuestionBank]
    links: list[TestLink]

    @property
    def questions(self) -> int:
        return sum(bank.questions for bank in self.banks)

    @property
    def total_points(self) -> float:
        return sum(bank.max_score for bank in self.banks)


@dataclass
class Learner:
    name: str
    email: str
    employee_id: str
    in_degreed: bool = True


@dataclass
class Attempt:
    """A finished attempt: one invitation that reached Complete, Test Left or Terminated."""

    test_invitation_id: int
    test_id: int
    email: str
    name: str
    status: str
    attempted_on: datetime  # UTC
    time_taken_seconds: int
    bank_scores: dict[int, float]  # qb_id -> candidate points
    invitation_type: str = "api"


@dataclass
class World:
    seed: int
    now: datetime
    tests: list[TestSpec] = field(default_factory=list)
    learners: list[Learner] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)

    def test(self, test_id: int) -> TestSpec:
        for spec in self.tests:
            if spec.test_id == test_id:
                return spec
        raise KeyError(test_id)


def ascii_slug(text: str) -> str:
    """Lower-case ASCII form of a name, for generated email addresses."""
    decomposed = unicodedata.normalize("NFKD", text)
    kept = "".join(ch for ch in decomposed if ch.isascii() and (ch.isalnum() or ch in " -"))
    return "-".join(kept.lower().replace("-", " ").split()) or "learner"


def performance_category(percent: float) -> str:
    for floor, label in PERFORMANCE_BANDS:
        if percent >= floor:
            return label
    return PERFORMANCE_BANDS[-1][1]


def generate_world(
    seed: int = 7,
    tests: int = 10,
    learners: int = 30,
    attempts: int = 40,
    skills_per_test: tuple[int, int] = (2, 4),
    missing_in_degreed: int | None = None,
    history_days: int = 14,
    now: datetime | None = None,
) -> World:
    """Build a deterministic world. ``missing_in_degreed`` defaults to about 5% of learners (at least 1)."""
    rng = random.Random(seed)
    now = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    world = World(seed=seed, now=now)

    section_id = 2_250_000
    qb_id = 5_500
    link_id = 201_000
    for index in range(tests):
        base = TEST_NAMES[index % len(TEST_NAMES)]
        name = base if index < len(TEST_NAMES) else f"{base} L{index // len(TEST_NAMES) + 1}"
        banks: list[QuestionBank] = []
        for skill in rng.sample(SKILL_POOL, rng.randint(*skills_per_test)):
            section_id += 1
            qb_id += 1
            questions = rng.randint(5, 25)
            banks.append(
                QuestionBank(
                    qb_id=qb_id,
                    qb_name=skill,
                    section_id=section_id,
                    section_name=skill,
                    questions=questions,
                    max_score=float(questions * rng.choice([1, 2])),
                )
            )
        link_id += 1
        links = [TestLink(test_link_id=link_id, test_link=f"{rng.getrandbits(32):08x}", name="Default test link")]
        if rng.random() < 0.3:
            link_id += 1
            links.insert(
                0,
                TestLink(
                    test_link_id=link_id,
                    test_link=f"{rng.getrandbits(32):08x}",
                    name="Old campaign link",
                    status="inactive",
                ),
            )
        world.tests.append(
            TestSpec(
                test_id=300_000 + index * 17,
                name=name,
                duration=rng.choice([20, 30, 45, 60, 90]),
                status="Published",
                labels=[rng.choice(["Technical", "Soft skills", "Language", "Leadership"])],
                banks=banks,
                links=links,
            )
        )

    used_emails: set[str] = set()
    for index in range(learners):
        first = FIRST_NAMES[rng.randrange(len(FIRST_NAMES))]
        last = LAST_NAMES[rng.randrange(len(LAST_NAMES))]
        email = f"{ascii_slug(first)}.{ascii_slug(last)}@example.com"
        if email in used_emails:
            email = f"{ascii_slug(first)}.{ascii_slug(last)}{index}@example.com"
        used_emails.add(email)
        world.learners.append(Learner(name=f"{first} {last}", email=email, employee_id=f"E{10000 + index}"))
    missing = max(1, learners // 20) if missing_in_degreed is None else missing_in_degreed
    for learner in rng.sample(world.learners, min(missing, len(world.learners))):
        learner.in_degreed = False

    invitation_id = 2_800_000
    if world.tests and world.learners:
        for _ in range(attempts):
            spec = world.tests[rng.randrange(len(world.tests))]
            learner = world.learners[rng.randrange(len(world.learners))]
            invitation_id += rng.randint(1, 9)
            roll = rng.random()
            status = STATUS_COMPLETE if roll < 0.88 else (STATUS_TEST_LEFT if roll < 0.95 else STATUS_TERMINATED)
            skill_level = rng.random()
            scores = {
                bank.qb_id: round(bank.max_score * min(1.0, max(0.0, rng.gauss(skill_level, 0.15))), 2)
                for bank in spec.banks
            }
            attempted_on = now - timedelta(seconds=rng.randint(3600, history_days * 86400))
            world.attempts.append(
                Attempt(
                    test_invitation_id=invitation_id,
                    test_id=spec.test_id,
                    email=learner.email,
                    name=learner.name,
                    status=status,
                    attempted_on=attempted_on.replace(microsecond=rng.randrange(0, 1000) * 1000),
                    time_taken_seconds=rng.randint(60, spec.duration * 60),
                    bank_scores=scores,
                    invitation_type=rng.choice(["api", "app"]),
                )
            )
    world.attempts.sort(key=lambda attempt: attempt.attempted_on)
    return world
