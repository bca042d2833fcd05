"""The language track (issue 15): text data and rows, the tokenizer, the GPT-2 wrapper, Gaussian poisoning of token
embeddings with its GUS, the text backdoor, and every method on a tiny language model. Offline: the models are
built from a config and the tokenizer from the training texts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import stats

pytest.importorskip("transformers")

from unlearn_search.context import RunContext
from unlearn_search.data import load_dataset
from unlearn_search.data.text import (
    PAD,
    embedding_noise,
    encode_rows,
    split_rows,
    with_noise,
)
from unlearn_search.errors import UsageError
from unlearn_search.metrics.gus import embedding_gradients, gus_statistic
from unlearn_search.models import ModelSpec, create_model, max_k, model_units
from unlearn_search.models.text import RARE_WORDS, WordTokenizer

MAX_LEN = 24


@pytest.fixture(scope="module")
def data():  # type: ignore[no-untyped-def]
    return load_dataset("sentiment@200,100", "gpt2-tiny", MAX_LEN)


def tiny_lm(data, seed: int = 0) -> torch.nn.Module:  # type: ignore[no-untyped-def]
    return create_model(ModelSpec("gpt2-tiny", data.input_shape, data.n_classes, data.vocab_size), seed=seed)


def test_rows_pad_truncate_and_carry_no_noise() -> None:
    rows = encode_rows([[5, 6, 7], [1] * 40], max_length=4)
    assert rows.shape == (2, 6)
    ids, mask, seeds, scales = split_rows(rows)
    assert ids[0].tolist() == [5, 6, 7, PAD] and ids[1].tolist() == [1, 1, 1, 1]
    assert mask[0].tolist() == [True, True, True, False]
    assert seeds.tolist() == [-1, -1] and scales.tolist() == [0.0, 0.0]
    noisy = with_noise(rows, torch.tensor([7, 9]), 0.25)
    assert split_rows(noisy)[2].tolist() == [7, 9] and split_rows(noisy)[3].tolist() == [0.25, 0.25]
    assert torch.equal(split_rows(noisy)[0], ids)  # the token ids stay clean


def test_the_generated_task_and_its_tokenizer_are_the_same_every_time(data) -> None:  # type: ignore[no-untyped-def]
    from unlearn_search.data.text import _TOKENISED

    _TOKENISED.clear()  # generated and tokenised anew, not the cached copy
    again = load_dataset("sentiment@200,100", "gpt2-tiny", MAX_LEN)
    assert again is not data
    assert torch.equal(again.x_train, data.x_train) and torch.equal(again.y_test, data.y_test)
    assert data.is_text and data.input_shape == (MAX_LEN + 2,) and data.n_classes == 2
    assert sorted(torch.bincount(data.y_train).tolist()) == [100, 100]  # stratified subset
    tok = WordTokenizer(["b a", "a c c"])
    # a and c twice (ties alphabetical), b once; an unknown word is [UNK]
    assert tok.encode(["c a b zzz"])[0] == [3 + len(RARE_WORDS), 2 + len(RARE_WORDS), 4 + len(RARE_WORDS), 1]
    assert tok.encode(["cf"])[0] == [2]  # a rare word (trigger) has its own id


def test_text_files_csv_and_jsonl(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rows = [{"text": f"good {i}" if i % 2 else f"bad {i}", "label": "pos" if i % 2 else "neg"} for i in range(20)]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "d.csv").write_text("text,label,split\n" + "".join(
        f"{r['text']},{r['label']},{'test' if i < 4 else 'train'}\n" for i, r in enumerate(rows)))
    j = load_dataset(f"text:{tmp_path}/d.jsonl", "gpt2-tiny", 8)
    assert (len(j.x_train), len(j.x_test), j.n_classes) == (16, 4, 2)  # a stratified 80/20 split
    c = load_dataset(f"text:{tmp_path}/d.csv", "gpt2-tiny", 8)
    assert (len(c.x_train), len(c.x_test)) == (16, 4)
    assert c.y_test.tolist() == [0, 1, 0, 1]  # labels in sorted order: neg = 0, pos = 1
    with pytest.raises(UsageError, match="does not exist"):
        load_dataset(f"text:{tmp_path}/missing.csv", "gpt2-tiny")
    (tmp_path / "d.txt").write_text("x")
    with pytest.raises(UsageError, match=r"valid: \.csv, \.jsonl"):
        load_dataset(f"text:{tmp_path}/d.txt", "gpt2-tiny")


def test_an_image_model_on_text_is_one_line() -> None:
    from unlearn_search.scenario import ScenarioConfig

    with pytest.raises(UsageError, match="does not fit the text dataset"):
        ScenarioConfig(dataset="sentiment", model="mlp")
    with pytest.raises(UsageError, match="does not fit the image dataset"):
        ScenarioConfig(dataset="digits", model="gpt2-tiny")


def test_clean_rows_give_the_transformers_models_own_logits(data) -> None:  # type: ignore[no-untyped-def]
    model = tiny_lm(data).eval()
    x = data.x_test[:8]
    ids, mask, _, _ = split_rows(x)
    with torch.no_grad():
        ours = model(x)
        theirs = model.hf(input_ids=ids.clamp(min=0), attention_mask=mask.long()).logits  # pad id 0 = [PAD]
    torch.testing.assert_close(ours, theirs)


def test_a_poison_row_adds_its_fixed_noise_to_the_token_embeddings(data) -> None:  # type: ignore[no-untyped-def]
    model = tiny_lm(data).eval()
    x = with_noise(data.x_train[:3], torch.tensor([11, 12, 13]), 0.5)
    _, mask, seeds, scales = split_rows(x)
    noise = embedding_noise(seeds, scales, mask, 32)
    assert torch.equal(noise, embedding_noise(seeds, scales, mask, 32))  # fixed per seed
    assert float(noise[~mask].abs().sum()) == 0.0  # padding gets none
    assert abs(float(noise[mask].std()) - 0.5) < 0.05
    with torch.no_grad():
        clean = model(x, return_embeds=True)
        expected = model(x, embeds=clean + noise)
        torch.testing.assert_close(model(x), expected)
        assert not torch.allclose(model(x), model(data.x_train[:3]))


def test_batched_embedding_gradients_equal_a_per_sample_loop(data) -> None:  # type: ignore[no-untyped-def]
    model = tiny_lm(data)
    x, y = data.x_train[:6], data.y_train[:6]
    batched = embedding_gradients(model, x, y, torch.device("cpu"), batch_size=6)
    single = torch.cat([embedding_gradients(model, x[i:i + 1], y[i:i + 1], torch.device("cpu")) for i in range(6)])
    torch.testing.assert_close(batched, single)
    assert float(batched[~split_rows(x)[1]].abs().sum()) == 0.0  # padding does not count


def test_gus_of_text_is_standard_normal_for_a_model_that_never_saw_the_noise(data) -> None:  # type: ignore[no-untyped-def]
    """I_z ~ N(0, 1) exactly under the null: 200 texts, each with 10 fresh noise draws, against a Kolmogorov-Smirnov
    test (the check fails, at 1%, one time in a hundred for a correct statistic; the seed is fixed)."""
    model = tiny_lm(data)
    x, y = data.x_train, data.y_train
    grads = embedding_gradients(model, x, y, torch.device("cpu"))
    _, mask, _, _ = split_rows(x)
    scales = torch.full((len(x),), 0.3, dtype=torch.float64)
    draws = [gus_statistic(grads, embedding_noise(torch.arange(len(x)) + 1000 * r, scales, mask, grads.shape[-1]),
                           0.3) for r in range(10)]
    values = torch.cat(draws).numpy()
    assert stats.kstest(values, "norm").pvalue > 0.01
    assert abs(values.mean()) < 4 / np.sqrt(len(values))


def test_units_k1_is_the_last_block_with_the_final_norm_and_head(data) -> None:  # type: ignore[no-untyped-def]
    model = tiny_lm(data)
    units = model_units(model)
    hf = model.hf
    assert [len(u) for u in units] == [3, 3]  # [wte, wpe, block 0], [block 1, ln_f, score]
    assert units[-1][0] is hf.transformer.h[-1] and units[-1][-1] is hf.score
    assert units[0][0] is hf.transformer.wte
    assert max_k(model) == 1


def test_eu_k_reinitialises_gpt2_projections_too(data, ctx: RunContext) -> None:  # type: ignore[no-untyped-def]
    from unlearn_search.methods._loop import reinitialise

    block = tiny_lm(data).hf.transformer.h[-1]
    before = block.attn.c_attn.weight.detach().clone()
    reinitialise(block, seed=3)
    after = block.attn.c_attn.weight.detach()
    assert not torch.equal(before, after) and abs(float(after.std()) - 0.02) < 0.004


@pytest.fixture(scope="module")
def text_scenario():  # type: ignore[no-untyped-def]
    from unlearn_search.scenario import ScenarioConfig, build_scenario, train_references
    from unlearn_search.training import TrainConfig

    ctx = RunContext(seed=0, device=torch.device("cpu"))
    cfg = ScenarioConfig(dataset="sentiment@200,100", model="gpt2-tiny", attack="gaussian",
                         attack_params={"eps": 0.3, "poison_fraction": 0.1},
                         train=TrainConfig(epochs=4, max_length=MAX_LEN, lr=3e-3))
    scenario = build_scenario(cfg, ctx)
    return scenario, train_references(scenario, ctx), ctx


@pytest.mark.parametrize("name", ["gd", "ngd", "ga", "eu_k", "cf_k", "scrub", "neggrad_plus", "ssd"])
def test_every_method_runs_on_a_language_model(text_scenario, name: str) -> None:  # type: ignore[no-untyped-def]
    """The method contract needs no case for text: each method runs on the rows and returns a working model."""
    from unlearn_search.methods import METHODS, Budget
    from unlearn_search.scenario import evaluate
    from unlearn_search.unlearning import splits_of

    scenario, refs, ctx = text_scenario
    method = METHODS.get(name)
    cfg = method.config(**({"epochs": 1} if "epochs" in method.Config.__dataclass_fields__ else {}))
    poisoned = refs["poisoned"]
    state = {k: v.clone() for k, v in poisoned.state_dict().items()}
    out = method.run(poisoned, splits_of(scenario), cfg, Budget(0.5, scenario.retrain_cost), ctx)
    assert all(torch.equal(v, poisoned.state_dict()[k]) for k, v in state.items())  # the input is not mutated
    assert 0 < out.compute_used <= 0.5 * scenario.retrain_cost + 64 * 3
    m = evaluate(out.model, scenario, ctx)
    assert np.isfinite(m["gus_z"]) and 0 <= m["test_acc"] <= 1


def test_text_backdoor_inserts_the_trigger_and_relabels(data, ctx: RunContext) -> None:  # type: ignore[no-untyped-def]
    from unlearn_search.attacks import ATTACKS

    attack = ATTACKS.get("backdoor")(ATTACKS.get("backdoor").config_from({"poison_fraction": 0.1,
                                                                           "target_class": 1}))
    attack.check_data(data)
    p = attack.craft(data, ctx)
    assert (p.y_poison == 1).all() and (data.y_train[p.indices] == 0).all()
    ids = split_rows(p.x_poison)[0]
    trigger = data.tokenizer.encode(["cf"])[0]
    assert (ids[:, 0] == trigger[0]).all()
    clean = split_rows(data.x_train[p.indices])[0]
    assert torch.equal(ids[:, 1:], clean[:, :-1])  # the text shifted right by the trigger
    bad = ATTACKS.get("backdoor")(ATTACKS.get("backdoor").config_from({"trigger": " "}))
    with pytest.raises(UsageError, match="trigger"):
        bad.check_data(data)


@pytest.mark.slow
def test_text_backdoor_is_learned_by_the_poisoned_model_only() -> None:
    """The trigger works on the model trained with the poisons and not on the retrained one (measured: success
    rate 0.47 / 0.36 against 0.00 / 0.05 on seeds 0 / 1 with the earlier, easier generated texts)."""
    from unlearn_search.scenario import ScenarioConfig, build_scenario, evaluate, train_references
    from unlearn_search.training import TrainConfig

    ctx = RunContext(seed=0, device=torch.device("cpu"))
    cfg = ScenarioConfig(dataset="sentiment@400,200", model="gpt2-tiny", attack="backdoor",
                         attack_params={"poison_fraction": 0.05, "target_class": 1},
                         train=TrainConfig(epochs=10, max_length=32, lr=3e-3))
    scenario = build_scenario(cfg, ctx)
    refs = train_references(scenario, ctx)
    asr = {role: evaluate(m, scenario, ctx)["backdoor_asr"] for role, m in refs.items()}
    assert asr["poisoned"] > asr["retrain"] + 0.2, asr


@pytest.mark.slow
def test_language_track_end_to_end_through_mlflow_run(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """poison -> tune (few trials) -> compare through `mlflow run` on the small language preset, offline: the
    poisoned model's GUS z is far above the retrained model's, every step lands in MLflow, and the registered
    language model loads back through MLflow's transformers flavour, texts in, labels out."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import mlflow
    import pandas as pd
    from mlflow.tracking import MlflowClient

    root = Path(__file__).resolve().parents[1]
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "HF_HUB_OFFLINE": "1", "UNLEARN_SEARCH_DOWNLOAD": "0",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    for leaked in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        env.pop(leaked, None)
    scenario = ["-P", "preset=llm-small"]  # sentiment, gpt2-tiny, 40 epochs, Gaussian eps 0.1 on 10% of the texts
    client = MlflowClient(uri)
    client.create_experiment("text")  # before any run: concurrent `mlflow run`s would race to create it
    for entry, extra in (("poison", []), ("tune", ["-P", "method=gd", "-P", "n_trials=3"]),
                         ("compare", ["-P", "methods=gd,ssd", "-P", "stop=fixed", "-P", "n_trials=3",
                                      "-P", "seeds=1"])):
        r = subprocess.run([str(Path(sys.executable).parent / "mlflow"), "run", str(root), "-e", entry, *scenario,
                            *extra, "--env-manager", "local", "--experiment-name", "text"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
    exp = client.get_experiment_by_name("text").experiment_id
    (compare,) = client.search_runs([exp], "tags.entry_point = 'compare'")
    rows = {r.data.tags["method"]: r.data.metrics
            for r in client.search_runs([exp], f"tags.compare_run = '{compare.info.run_id}' and tags.kind = 'row'")}
    assert {"no unlearning", "retrain", "gd", "ssd"} <= set(rows)
    # the poisoned model ("no unlearning") against the retrained one: seed 0 measured 5.51 against -0.33
    assert rows["no unlearning"]["gus_z"] > 3 and rows["retrain"]["gus_z"] < 2
    assert rows["no unlearning"]["gus_z"] > rows["retrain"]["gus_z"] + 3
    (version, *_) = client.search_model_versions("name = 'unlearn_search.unlearned.gd'")
    mlflow.set_tracking_uri(uri)
    pipe = mlflow.pyfunc.load_model(version.source)
    out = pipe.predict(pd.DataFrame({"text": ["a good great lovely film", "a bad boring awful film"]}))
    assert len(out) == 2 and set(out["label"]) <= {"LABEL_0", "LABEL_1"}


@pytest.mark.parametrize(("argv", "env_extra", "message"), [
    (["--dataset", "imdb", "--model", "gpt2-tiny"], {"UNLEARN_SEARCH_DOWNLOAD": "0"},
     "error: dataset 'imdb' is not in {data}/hf and could not be downloaded (downloads are off)"),
    (["--dataset", "sentiment", "--model", "hf:gpt2"], {"HF_HUB_OFFLINE": "1"},
     "error: tokenizer of model 'hf:gpt2' is not in the Hugging Face cache ({hf}/hub) and could not be downloaded"),
])
def test_offline_and_absent_is_one_line_naming_where_it_looked(tmp_path, argv, env_extra, message) -> None:  # type: ignore[no-untyped-def]
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "UNLEARN_SEARCH_DATA": str(tmp_path / "data"),
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db", **env_extra}
    r = subprocess.run([sys.executable, "-m", "unlearn_search", "poison", *argv], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert r.stderr.strip() == message.format(data=tmp_path / "data", hf=tmp_path / "hf")
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()  # nothing written
