"""docs/ stays true to the code: its generated parts are what tools/gen_docs.py makes of the declarations now,
the hand-written lists that mirror a declaration follow it, and every link leads somewhere."""
import re
from pathlib import Path

import gen_docs
import pytest

from gespann.exporters.events import JSON_KEYS
from gespann.figures import counter
from gespann.probes.toolkit.flavours import MODES
from gespann.settings import Key, Keys

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"


@pytest.mark.parametrize("path", sorted({gen_docs.DOCS / document for document, _, _ in gen_docs.PARTS}),
                         ids=lambda path: path.name)
def test_each_generated_part_is_up_to_date(path):
    now, fresh = gen_docs.documents()[path]
    assert now == fresh, f"docs/{path.name} is stale: run {gen_docs.COMMAND}"


def test_a_new_config_key_makes_the_config_doc_stale(monkeypatch):
    from gespann import config

    monkeypatch.setattr(config, "KEYS", Keys(*config.KEYS.values(), Key("scope.cgroup", "a key not yet written")))
    assert gen_docs.stale() == [DOCS / "config.md"]


def test_a_new_metric_makes_the_metrics_doc_stale(monkeypatch):
    import gespann.collector as collector

    extra = counter("sockets_sampled_total", (), "A metric not yet written down.")
    monkeypatch.setattr(collector, "OWN_METRICS", (*collector.OWN_METRICS, extra))
    monkeypatch.setattr(collector, "CATALOGUE", (*collector.CATALOGUE, extra))
    assert gen_docs.stale() == [DOCS / "metrics.md"]
    assert "`gespann_sockets_sampled_total`" in gen_docs.documents()[DOCS / "metrics.md"][1]


def test_every_exporter_setting_and_config_key_is_in_the_config_doc():
    from gespann.config import KEYS
    from gespann.exporters import KINDS

    text = (DOCS / "config.md").read_text()
    for path in KEYS:
        assert f"| `{path}` |" in text
    for name in KINDS:
        for setting in KINDS[name].settings:
            assert f"| `exporters[].settings.{setting.name}` |" in text


def test_the_record_keys_are_the_json_keys_in_order():
    rows = re.findall(r"^\| `(\w+)` \|", (DOCS / "records.md").read_text(), re.M)
    assert tuple(rows) == JSON_KEYS


def test_the_guide_states_the_tables_order_of_flavours():
    guide = (DOCS / "writing-a-probe.md").read_text()
    row = re.search(r"^\| `flavours` \|.*?\(((?:`\w+`, )+`\w+`);", guide, re.M)
    assert row, "docs/writing-a-probe.md no longer lists the flavours in its table"
    assert tuple(re.findall(r"`(\w+)`", row.group(1))) == MODES


def _anchors(text: str) -> set[str]:
    """GitHub's anchors of a document's headings."""
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
            for heading in re.findall(r"^#+ (.*)$", text, re.M)}


@pytest.mark.parametrize("document", ["README.md", *sorted(f"docs/{p.name}" for p in DOCS.glob("*.md"))])
def test_every_relative_link_leads_to_a_file_and_heading(document):
    source = REPO / document
    for target in re.findall(r"\]\(([^)\s]+)\)", source.read_text()):
        if re.match(r"\w+://", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (source.parent / path).resolve() if path else source
        assert linked.exists(), f"{document} links to {target}, which does not exist"
        if anchor:
            assert anchor in _anchors(linked.read_text()), f"{document} links to {target}: no such heading"


def test_the_readme_links_every_document():
    readme = (REPO / "README.md").read_text()
    for path in DOCS.glob("*.md"):
        assert f"(docs/{path.name})" in readme, f"README.md does not link docs/{path.name}"
