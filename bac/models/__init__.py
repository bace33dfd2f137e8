"""One module per paper (`ren2019`, `li2021`, `chen2022`, `liu2024`, `zheng2024`), plus `pretrained`.

Every model follows `bac.train`'s convention: `model(x, male) -> months` (or a tuple starting with it).
"""
