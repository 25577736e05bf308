"""Run a short RL loop on the tiny profile and save what it ends with (the main process only).

    python tests/rl_worker.py PARAMS_JSON OUT_DIR [LIVE_DIR]                        # one process
    accelerate launch --multi_gpu --num_processes 2 tests/rl_worker.py PARAMS_JSON OUT_DIR   # two (gloo on CPU)

Written for ``tests/test_rl_processes.py`` and ``tests/test_rl_kills.py``; ``stages/rl.py`` is the same loop with
data, evaluation and logs. With LIVE_DIR the per-step curves go to dvclive there, as the stage logs them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from safetensors.torch import save_file

from negopt.core.params import validate_params
from negopt.models.loader import load_policy, load_scorer, load_sd_pipeline
from negopt.rl.loop import Components, run_rl


def main(params_path: str, out_dir: str, live_dir: str | None = None) -> None:
    spec = json.loads(Path(params_path).read_text())
    params = validate_params(spec["params"])
    accelerator = Accelerator(cpu=True)
    dev = accelerator.device
    policy, tok = load_policy(params.paths.sft, dev)
    ref, _ = load_policy(params.paths.sft, dev)
    comp = Components(policy, ref, tok, load_sd_pipeline(params.active, dev), load_scorer(params.active, dev),
                      sft_dir=params.paths.sft)
    live = None
    if live_dir and accelerator.is_main_process:
        from dvclive import Live

        live = Live(live_dir, dvcyaml=False, save_dvc_exp=False, resume=True)
    state = run_rl(params, comp, spec["prompts"], accelerator=accelerator, live=live)
    if live is not None:
        live.end()
    if accelerator.is_main_process:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {f"policy.{k}": v.detach().clone().cpu() for k, v in policy.state_dict().items()}  # untied copies
        save_file(tensors | {"marginal": state.marginal.contiguous()}, str(out / "state.safetensors"))
        (out / "run.json").write_text(json.dumps({"processes": accelerator.num_processes,
                                                  "threads": torch.get_num_threads(),
                                                  "stats": state.stats.state_dict()}))
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    main(*sys.argv[1:4])
