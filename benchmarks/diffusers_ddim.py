"""How closely ddim_sample reproduces diffusers' own DDIM loop (eta = 0, clip_sample=False) on
tiny random UNet2DModels: every beta schedule, two steps_offset values, three prediction types,
conditional and not, float32 and float64 (the README's diffusers paragraph).

    python benchmarks/diffusers_ddim.py --steps 50
"""

import argparse
import logging

import diffusers
import torch

import elsmachine as em


def unet(conditional):
    torch.manual_seed(0)
    return diffusers.UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4,
        num_class_embeds=3 if conditional else None)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=50)
    a = ap.parse_args()
    logging.getLogger("diffusers").setLevel(logging.ERROR)
    worst = {}
    for beta in ("linear", "scaled_linear", "squaredcos_cap_v2"):
        for offset in (0, 1):
            for prediction in ("epsilon", "v_prediction", "sample"):
                for dtype in (torch.float32, torch.float64):
                    for conditional in (False, True):
                        net = unet(conditional).to(dtype)
                        sched = diffusers.DDIMScheduler(beta_schedule=beta, steps_offset=offset,
                                                        prediction_type=prediction, clip_sample=False)
                        if dtype == torch.float64:
                            sched.alphas_cumprod = sched.alphas_cumprod.double()
                            sched.final_alpha_cumprod = sched.final_alpha_cumprod.double()
                        noise = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1),
                                            dtype=torch.float64).to(dtype)
                        labels = torch.tensor([0, 1, 2, 0]) if conditional else None
                        sched.set_timesteps(a.steps)
                        x = noise
                        with torch.no_grad():
                            for k in sched.timesteps:
                                x = sched.step(net(x, k, class_labels=labels).sample, k, x, eta=0.0).prev_sample
                        ours = em.ddim_sample(em.from_diffusers(net, sched), noise, steps=a.steps, labels=labels)
                        rel = float((ours - x).norm() / x.norm())
                        key = str(dtype).replace("torch.", "")
                        worst[key] = max(worst.get(key, 0.0), rel)
                        print(f"{beta:18s} offset {offset} {prediction:12s} {key} conditional={conditional}: "
                              f"relative difference {rel:.2e}", flush=True)
    for k, v in worst.items():
        print(f"largest relative difference in {k}: {v:.2e}")


if __name__ == "__main__":
    main()
