"""The review page's layout rules without a browser: the groups, the next flagged cell of each cell, the grouping kept
by the no-JavaScript label form, one "accept the remaining AI labels" form, and one
label button per class of the enumeration."""

from __future__ import annotations

import re

from review_data import STANDARD_CELLS, add_sample

from device.store.records import CELL_LABELS, Cell
from webui.pages.review_gallery import OPEN_ALL_UP_TO, group_cells, grouping, next_flagged


def cell(cid, ai="normal", reviewer=None, flagged=False, edge=False):
    return {"id": cid, "ai_label": ai, "reviewer_label": reviewer, "final_label": reviewer or ai,
            "needs_review": flagged, "edge": edge}


CELLS = [cell(1, "blast", flagged=True), cell(2, flagged=True, reviewer="blast"), cell(3, "blast"),
         cell(4, flagged=True), cell(5, edge=True, flagged=True), cell(6, "normal", flagged=True)]


def test_groups_by_flag_ai_label_and_class_keep_the_order():
    by_flag = {g.key: [c["id"] for c in g.cells] for g in group_cells(CELLS, "flag", list(CELL_LABELS))}
    assert by_flag == {"to-review": [1, 4, 6], "reviewed": [2], "not-flagged": [3], "edge": [5]}
    by_ai = {g.key: [c["id"] for c in g.cells] for g in group_cells(CELLS, "ai", list(CELL_LABELS))}
    assert by_ai == {"blast": [1, 3], "normal": [2, 4, 6], "edge": [5]}
    by_class = {g.key: [c["id"] for c in g.cells] for g in group_cells(CELLS, "class", list(CELL_LABELS))}
    assert by_class == {"blast": [1, 2, 3], "normal": [4, 6], "edge": [5]}
    # a class outside the list still gets its group (a newer enumeration than this page knows)
    extra = group_cells([*CELLS, cell(7, reviewer="lymphocyte")], "class", list(CELL_LABELS))
    assert [g.key for g in extra] == ["blast", "normal", "lymphocyte", "edge"]
    assert grouping("nonsense") == grouping(None) == "flag" and grouping("ai") == "ai"


def test_large_samples_open_only_the_cells_to_review():
    many = [cell(i, flagged=i % 5 == 0) for i in range(1, OPEN_ALL_UP_TO + 2)]
    assert {g.key: g.open for g in group_cells(many, "flag", list(CELL_LABELS))} == {
        "to-review": True, "not-flagged": False}
    assert all(g.open for g in group_cells(CELLS, "flag", list(CELL_LABELS)))
    # the group of the cell just labelled is open, wherever it went
    shown = {g.key: g.open for g in group_cells(many, "flag", list(CELL_LABELS), shown=OPEN_ALL_UP_TO)}
    assert shown == {"to-review": True, "not-flagged": True}


def test_next_flagged_follows_the_page_order_and_wraps():
    groups = group_cells(CELLS, "ai", list(CELL_LABELS))  # page order: 1, 3, 2, 4, 6, 5
    first, after = next_flagged(groups)
    assert first == 1
    assert after == {1: 4, 3: 4, 2: 4, 4: 6, 6: 1, 5: 1}
    assert next_flagged(group_cells([cell(1, flagged=True)], "flag", []))[1] == {1: None}
    assert next_flagged(group_cells([cell(1)], "flag", [])) == (None, {1: None})


def test_page_has_one_button_per_class_and_next_flagged_links(app, client, auth):
    sample_id, cells = add_sample(app)
    auth.login("path")
    page = client.get(f"/samples/{sample_id}/review").get_data(as_text=True)
    first = re.search(r'<form method="post" action="[^"]+" class="label-form".*?</form>', page, re.DOTALL).group(0)
    assert re.findall(r'name="label" value="([^"]+)"', first) == list(CELL_LABELS)
    # the tool bar's "Next flagged" goes to the hardest open flagged cell, and each cell's to the next one
    assert f'id="next-flagged" data-next-flagged\n     href="#cell-{cells[3]}"' in page
    assert page.count('href="#box-') == len(STANDARD_CELLS) and 'id="frames"' in page and 'id="report"' in page
    assert page.count('id="accept-ai"') == 1  # one "accept the remaining AI labels" button (review/_differential.html)


def test_label_form_without_javascript_keeps_the_grouping(app, client, auth):
    sample_id, cells = add_sample(app)
    auth.login("path")
    token = auth.csrf(f"/samples/{sample_id}/review?group=ai")
    response = client.post(f"/cells/{cells[3]}/label", data={"csrf_token": token, "label": "blast", "group": "ai"})
    assert response.headers["Location"].endswith(f"/samples/{sample_id}/review?cell={cells[3]}&group=ai#cell-{cells[3]}")
    response = client.post(f"/cells/{cells[2]}/label", data={"csrf_token": token, "label": "blast",
                                                              "group": "../../x"})
    assert response.headers["Location"].endswith(f"/samples/{sample_id}/review?cell={cells[2]}#cell-{cells[2]}")
    with app.app_context():
        assert Cell.get_by_id(cells[3]).reviewer_label == "blast"
