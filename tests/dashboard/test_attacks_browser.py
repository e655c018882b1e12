"""The standalone dashboard in a real browser against what strangers can register on chain: a model of 65535
layers costs the page a few elements (not one a layer), a large served model's bar sits where its span is, and a
model name holding bidi controls is isolated from the text after it; the console holds no error."""

from __future__ import annotations

from typing import Any

from shardnet.span import LayerSpan
from tests.chain.registry_world import World
from tests.coordinator.harness import wait_for
from tests.dashboard.test_browser import browser
from tests.dashboard.test_standalone import dashboard, world

__all__ = ["browser", "dashboard", "world"]  # the fixtures this module uses

BIDI_NAME = "\u202eevil\u202d"


def in_page(driver: Any, script: str) -> Any:
    return driver.execute_script(script)


def test_huge_and_bidi_models_stay_cheap_and_isolated(world: World, dashboard: str, browser: Any) -> None:
    junk = int(
        world.reg(world.outsider)
        .register_model("junk", "bafkjunk", 65535, 1)
        .event("ModelRegistered")
        .args["modelId"]
    )
    large = int(
        world.gov.register_model("large", "bafklarge", 1000, 1).event("ModelRegistered").args["modelId"]
    )
    world.reg(world.node1).announce_shard(large, LayerSpan(0, 500))
    bidi = int(world.gov.register_model(BIDI_NAME, "bafkbidi", 4, 1).event("ModelRegistered").args["modelId"])
    browser.get(dashboard + "/dashboard")
    shown = f"return document.querySelector('.model[data-model-id=\"{bidi}\"]') !== null"
    wait_for(
        lambda: in_page(browser, shown),
        60,
        "the models registered by the test shown",
        interval=0.3,
    )
    cells = in_page(
        browser, f"return document.querySelectorAll('.model[data-model-id=\"{junk}\"] .layer').length"
    )
    assert cells == 1  # one run of 65535 uncovered layers, not 65535 cells
    runs = in_page(
        browser,
        f"return [...document.querySelectorAll('.model[data-model-id=\"{large}\"] .layer')]"
        ".map(e => [e.dataset.layer, e.dataset.replicas, e.classList.contains('uncovered')])",
    )
    assert runs == [["0:500", "1", False], ["500:1000", "0", True]]
    share = in_page(
        browser,
        f"const a = document.querySelector('.model[data-model-id=\"{large}\"] .assignment');"
        "const t = a.querySelector('.track').getBoundingClientRect(), b = a.querySelector('.bar').getBoundingClientRect();"
        "return [(b.left - t.left) / t.width, b.width / t.width];",
    )
    assert abs(share[0]) < 0.01 and abs(share[1] - 0.5) < 0.01
    assert (
        in_page(
            browser,
            f"return getComputedStyle(document.querySelector('.model[data-model-id=\"{bidi}\"] .model-name')).unicodeBidi",
        )
        == "isolate"
    )
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
