"""LoRA adapters in inference through the real network: `POST /v1/adapters`, then `model: "<base>+<id>"`.

The greedy tokens with the adapter must equal one process's generation with the same LoRA applied to the
unsplit HF model (its own hooks, not the workers' code), differ from the base model's, and a base-model
request running at the same time on the same workers must stay plain. Bad adapters are refused before paying.
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from typing import Any

import torch
from safetensors.torch import save as save_safetensors

from tests.coordinator.harness import http_json
from tests.coordinator.network import EOS_ID, Net, reference_text

PROJS = ("q_proj", "k_proj", "v_proj", "o_proj")


def _lora(config: Any, rank: int = 4, scale: float = 0.5, seed: int = 7) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    hidden, heads = int(config.hidden_size), int(config.num_attention_heads)
    head_dim = int(getattr(config, "head_dim", None) or hidden // heads)
    kv = int(config.num_key_value_heads) * head_dim
    shapes = {"q_proj": (hidden, heads * head_dim), "k_proj": (hidden, kv), "v_proj": (hidden, kv),
              "o_proj": (heads * head_dim, hidden)}  # fmt: skip
    out: dict[str, torch.Tensor] = {}
    for layer in range(int(config.num_hidden_layers)):
        for proj in PROJS:
            fan_in, fan_out = shapes[proj]
            out[f"lora.{layer}.{proj}.A"] = torch.randn(rank, fan_in, generator=gen) / fan_in**0.5
            out[f"lora.{layer}.{proj}.B"] = torch.randn(fan_out, rank, generator=gen) * scale
    return out


def _upload(net: Net, data: bytes) -> tuple[int, dict[str, Any]]:
    import json

    req = urllib.request.Request(net.coordinator.url + "/v1/adapters", data=data, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _reference_with_lora(net: Net, lora: dict[str, torch.Tensor], prompt: str, n: int) -> str:
    return _reference_tokens_with_lora(net, lora, prompt, n)[1]


def _reference_tokens_with_lora(
    net: Net, lora: dict[str, torch.Tensor], prompt: str, n: int
) -> tuple[list[int], str]:
    """Greedy text of the unsplit HF model with `lora` added to its projections by plain forward hooks."""
    model = net.reference["model"]
    handles = []
    for name, a in lora.items():
        _, layer, proj, half = name.split(".")
        if half != "A":
            continue
        b = lora[f"lora.{layer}.{proj}.B"]
        module = model.model.layers[int(layer)].self_attn.get_submodule(proj)

        def hook(_m: Any, args: Any, output: torch.Tensor, a: torch.Tensor = a, b: torch.Tensor = b) -> Any:
            return output + args[0] @ a.T @ b.T

        handles.append(module.register_forward_hook(hook))
    try:
        tokens, _ = reference_text(net, prompt, n)
    finally:
        for h in handles:
            h.remove()
    assert EOS_ID not in tokens
    return tokens, str(net.reference["tokenizer"].decode(tokens, skip_special_tokens=True))


def test_adapter_changes_output_and_equals_one_process(net: Net) -> None:
    config = net.reference["model"].config
    lora = _lora(config)
    status, uploaded = _upload(net, save_safetensors(lora))
    assert status == 200, uploaded
    cid = uploaded["id"]
    assert cid.startswith("0x") and len(cid) == 66 and uploaded["tensors"] == len(lora)

    prompt, n = "The sky is", 12
    expected = _reference_with_lora(net, lora, prompt, n)
    _, base_text = reference_text(net, prompt, n)
    assert expected != base_text  # the adapter measurably changes the greedy output

    results: dict[str, Any] = {}

    def ask(key: str, model: str) -> None:
        body = {"model": model, "prompt": prompt, "max_tokens": n, "temperature": 0}
        results[key] = http_json("POST", net.coordinator.url + "/v1/completions", body, timeout=120)

    threads = [
        threading.Thread(target=ask, args=("adapted", f"tiny-chat+{cid}")),
        threading.Thread(target=ask, args=("base", "tiny-chat")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    status, adapted = results["adapted"]
    assert status == 200, adapted
    assert adapted["choices"][0]["text"] == expected
    status, base = results["base"]
    assert status == 200, base
    assert base["choices"][0]["text"] == base_text  # the other session on the same workers stayed plain


def test_bad_adapters_refused_before_paying(net: Net) -> None:
    config = net.reference["model"].config
    url = net.coordinator.url + "/v1/completions"

    nan = _lora(config)
    nan["lora.0.q_proj.B"][0, 0] = float("nan")
    status, answer = _upload(net, save_safetensors(nan))
    assert status == 400 and "finite" in answer["error"]["message"]
    status, answer = _upload(net, b"not safetensors")
    assert status == 400

    wrong = _lora(config)
    wrong["lora.1.k_proj.A"] = torch.zeros(4, int(config.hidden_size) + 1)
    status, uploaded = _upload(net, save_safetensors(wrong))
    assert status == 200  # a well-formed LoRA: its shapes are checked against the model it is asked with
    jobs_before = net.owner.job_count() if hasattr(net.owner, "job_count") else None
    body = {"model": f"tiny-chat+{uploaded['id']}", "prompt": "hi", "max_tokens": 3}
    status, answer = http_json("POST", url, body)
    assert status == 400 and "another model" in answer["error"]["message"], answer
    status, answer = http_json("POST", url, {**body, "model": "tiny-chat+0x" + "ab" * 32})
    assert status == 400 and "POST /v1/adapters" in answer["error"]["message"], answer
    if jobs_before is not None:
        assert net.owner.job_count() == jobs_before  # nothing was paid


def test_submit_with_adapter_signed_into_the_handover(net: Net) -> None:
    """`ShardnetClient.submit(adapter=...)` (what `shardnet submit --adapter` calls) uploads the file, signs its CID
    into the prompt hand-over, and the settled output is the adapter's; a hand-over whose adapter differs from the
    signed one is 401, an unknown adapter 400, and the job stays unstarted."""
    from shardnet.client import ClientError
    from shardnet.job_auth import AUTH_HEADER, handover_body, sign_prompt_handover

    config = net.reference["model"].config
    lora = _lora(config, seed=11)
    data = save_safetensors(lora)
    prompt, n = "Once upon", 10
    expected = _reference_with_lora(net, lora, prompt, n)
    assert expected != reference_text(net, prompt, n)[1]
    outcome = net.client.submit(prompt, model="tiny-chat", max_tokens=n, adapter=data)
    assert outcome.text == expected

    other = save_safetensors(_lora(config, seed=12))
    other_cid = net.client.upload_adapter(net.coordinator.url, other)
    job_id = net.client.pay("swap", net.model_id, 4)
    signed = handover_body("swap", adapter=other_cid)
    auth = {AUTH_HEADER: sign_prompt_handover(net.client.registry.account, job_id, signed)}
    swapped = {**signed, "adapter": outcome_cid(data)}
    url = f"{net.coordinator.url}/v1/jobs/{job_id}/prompt"
    status, answer = http_json_auth(url, swapped, auth)
    assert status == 401, answer
    unknown = handover_body("swap", adapter="0x" + "cd" * 32)
    auth = {AUTH_HEADER: sign_prompt_handover(net.client.registry.account, job_id, unknown)}
    status, answer = http_json_auth(url, unknown, auth)
    assert status == 400 and "POST /v1/adapters" in str(answer), answer
    try:
        net.client.upload_adapter(net.coordinator.url, b"\x00" * 64)
        raise AssertionError("a file that is no adapter was taken")
    except ClientError as exc:
        assert "refused the adapter" in str(exc)
    net.client.hand_over(net.coordinator.url, job_id, "swap", {"adapter": other_cid})  # the signed one: taken


def outcome_cid(data: bytes) -> str:
    from eth_utils import keccak

    return "0x" + keccak(data).hex()


def http_json_auth(url: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, Any]:
    from shardnet.http_json import request_json

    return request_json("POST", url, body, timeout=30, headers=headers)


def test_trained_adapter_through_the_api(net: Net, tmp_path: Any) -> None:
    """A LoRA trained for a few steps by `shardnet finetune` (in one process) to answer a prompt with a fixed
    completion: through the OpenAI API it equals the unsplit model with the same LoRA and moves the greedy output
    towards the completion (more of its tokens right than the base model gets)."""
    import json

    from safetensors.torch import load_file

    from shardnet.cli import main
    from shardnet.model.export import save_parts

    model, tokenizer = net.reference["model"], net.reference["tokenizer"]
    parts = tmp_path / "parts"
    save_parts(model, model.config, parts)
    (parts / "config.json").write_text(model.config.to_json_string())
    prompt = "The sky is"
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    target = tokenizer(" made of green cheese", add_special_tokens=False)["input_ids"]
    data = tmp_path / "task.jsonl"
    data.write_text(json.dumps({"prompt_ids": prompt_ids, "completion_ids": target}) + "\n")
    out = tmp_path / "adapter.safetensors"
    argv = ["finetune", "--model", str(parts), "--data", str(data), "--method", "lora", "--steps", "8",
            "--batch-size", "1", "--lr", "0.05", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    lora = {k: v for k, v in load_file(out).items() if k.startswith("lora.")}

    status, uploaded = _upload(net, out.read_bytes())
    assert status == 200, uploaded
    n = len(target)
    adapted_tokens, expected = _reference_tokens_with_lora(net, lora, prompt, n)
    body = {"model": f"tiny-chat+{uploaded['id']}", "prompt": prompt, "max_tokens": n, "temperature": 0}
    status, answer = http_json("POST", net.coordinator.url + "/v1/completions", body, timeout=120)
    assert status == 200, answer
    assert answer["choices"][0]["text"] == expected

    def right(tokens: list[int]) -> int:
        return sum(a == b for a, b in zip(tokens, target, strict=False))

    assert right(adapted_tokens) > right(reference_text(net, prompt, n)[0])
