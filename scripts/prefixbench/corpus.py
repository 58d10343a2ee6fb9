"""Realistic filler text for shared prefixes: a support policy (system prompt) and a RAG document.

The text is composed from sentence templates with a seeded RNG, so a given (workload, seed) always
yields the same text, and different seeds yield prefixes that differ from their very first token
(each starts with a distinct header), which keeps unique prefixes out of each other's cache blocks.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

WORKLOADS = ("chat_policy", "rag_document")

_PRODUCTS = ["Northwind Cloud", "Acme Ledger", "Orbit CRM", "Helix Storage", "Beacon Analytics"]
_TEAMS = ["billing", "security", "identity", "data platform", "customer success", "trust and safety"]
_CHANNELS = ["chat", "email", "the help center", "the mobile app", "a phone callback"]
_ITEMS = [
    "password resets",
    "data exports",
    "refund requests",
    "plan upgrades",
    "invoice corrections",
    "account deletions",
    "two-factor recovery",
    "API key rotation",
    "notification settings",
    "team invitations",
    "single sign-on setup",
    "usage limits",
    "audit log access",
]
_DAYS = ["two", "three", "five", "seven", "ten", "fourteen", "thirty"]

_POLICY_SENTENCES = [
    "When a customer asks about {item}, first confirm the account owner's identity through {channel}.",
    "Agents must never share internal ticket notes about {item} with anyone outside the {team} team.",
    "Requests involving {item} are normally resolved within {days} business days.",
    "If a request about {item} cannot be completed, explain the reason plainly and offer {channel} as a follow-up.",
    "Escalate {item} to the {team} team when the customer reports a suspected breach.",
    "Always quote the relevant section of the {product} terms of service when discussing {item}.",
    "Do not promise credits for {item}; only the {team} team may approve a credit.",
    "Customers on the enterprise plan of {product} receive a named contact for {item}.",
    "Log every conversation about {item} in the case history before closing the ticket.",
    "For {item}, the customer may choose {channel} or {channel2} for updates.",
    "Keep answers about {item} short, friendly and specific to {product}.",
    "A manager review is required when {item} affects more than {days} seats.",
]

_RAG_SENTENCES = [
    "The {product} {item} service stores its state in a replicated log owned by the {team} team.",
    "Operators can inspect {item} through the admin console or through {channel}.",
    "Retention for {item} records defaults to {days} days and can be raised per workspace.",
    "During an incident, the {team} on-call engineer owns all changes to {item}.",
    "Release notes for {product} list every behavioural change to {item} since the previous version.",
    "Rate limits for {item} are applied per organisation and reset every {days} minutes.",
    "The {item} pipeline emits metrics for latency, error rate and queue depth.",
    "Backups of {item} metadata are verified nightly by restoring them into a staging cluster.",
    "Access to {item} is granted through roles; the {team} team reviews role changes every {days} days.",
    "Clients should retry {item} calls with exponential backoff when the service answers 429.",
    "Schema changes that touch {item} require a design review with the {team} team.",
    "A regional outage of {product} degrades {item} but never loses acknowledged writes.",
]

_HEADERS = {
    "chat_policy": "[policy {case}] System: You are the support assistant for {product}. Policy handbook follows.",
    "rag_document": "[doc {case}] Context document: {product} operations guide, retrieved for the user's question.",
}


def _sentence(rng: random.Random, templates: list[str]) -> str:
    ch1, ch2 = rng.sample(_CHANNELS, 2)
    return rng.choice(templates).format(
        item=rng.choice(_ITEMS),
        channel=ch1,
        channel2=ch2,
        team=rng.choice(_TEAMS),
        days=rng.choice(_DAYS),
        product=rng.choice(_PRODUCTS),
    )


def paragraphs(workload: str, seed: str) -> Iterator[str]:
    """Yield an endless, deterministic stream of paragraphs for one workload and seed."""
    if workload not in _HEADERS:
        raise ValueError(f"unknown workload {workload!r}; expected one of {WORKLOADS}")
    rng = random.Random(f"{workload}:{seed}")
    templates = _POLICY_SENTENCES if workload == "chat_policy" else _RAG_SENTENCES
    yield _HEADERS[workload].format(product=rng.choice(_PRODUCTS), case=f"{rng.randrange(16**8):08x}")
    section = 1
    while True:
        body = " ".join(_sentence(rng, templates) for _ in range(rng.randint(3, 6)))
        yield f"Section {section}. {body}"
        section += 1


def text_of_at_least(workload: str, seed: str, min_chars: int) -> str:
    """Join paragraphs until the text has at least `min_chars` characters."""
    out: list[str] = []
    size = 0
    for para in paragraphs(workload, seed):
        out.append(para)
        size += len(para) + 1
        if size >= min_chars:
            break
    return "\n".join(out)


DEFAULT_QUESTIONS = [
    "How do I reset my password?",
    "How do I export my account data?",
    "How can I change my notification settings?",
    "Can I get a refund for last month's invoice?",
    "How do I invite a new team member?",
    "What happens to my data if I delete my account?",
    "How do I turn on two-factor authentication?",
    "Why was my API request rate limited?",
    "How do I rotate an API key without downtime?",
    "Who can see the audit log for my workspace?",
    "How long are backups kept?",
    "How do I set up single sign-on?",
    "Can I move my workspace to another region?",
    "How do I correct the billing address on an invoice?",
    "What should I do if I think my account was compromised?",
    "How do I raise my usage limits?",
    "How do I upgrade from the team plan to the enterprise plan?",
    "How can I get a copy of the terms of service?",
    "Why did my data export fail?",
    "How do I remove a former employee from my team?",
    "How are schema changes reviewed?",
    "What does a 429 response mean and how should I retry?",
    "Who approves account credits?",
    "How do I contact the security team?",
]

_ASKS = [
    "How do I request {item} for {product}?",
    "Who handles {item} on the {team} team?",
    "How long do {item} take?",
    "Can I get {item} through {channel}?",
    "What is the policy on {item} for enterprise customers?",
    "Why are my {item} delayed?",
    "What information do you need for {item}?",
    "Can {item} be escalated to the {team} team?",
]


def question_variants(n: int) -> list[str]:
    """`n` distinct questions: the built-in ones first, then deterministic variants (for high concurrency)."""
    out = list(DEFAULT_QUESTIONS[:n])
    combos = ((a, item, i) for i, item in enumerate(_ITEMS) for a in _ASKS)
    for ask, item, i in combos:
        if len(out) >= n:
            break
        out.append(
            ask.format(
                item=item,
                product=_PRODUCTS[i % len(_PRODUCTS)],
                team=_TEAMS[i % len(_TEAMS)],
                channel=_CHANNELS[i % len(_CHANNELS)],
            )
        )
    # Beyond the templates: the same questions again, each tagged with its own ticket number (still distinct text).
    base = list(out)
    k = 0
    while len(out) < n:
        out.append(f"{base[k % len(base)]} (ticket {1000 + k})")
        k += 1
    return out
