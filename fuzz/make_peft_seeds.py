#!/usr/bin/env python3
"""Writes fuzz/seeds/peft_fuzz/: PEFT adapters for the tiny llama and gpt2
presets in peft_fuzz's input layout ([arch][u32 json length][json]
[safetensors]). Run from the repo root; no dependencies."""
import json
import os
import struct

OUT = "fuzz/seeds/peft_fuzz"


def safetensors(tensors, dtype):
    size = {"F32": 4, "F16": 2, "BF16": 2}[dtype]
    header, data = {"__metadata__": {"format": "pt"}}, b""
    for name, shape in tensors:
        n = shape[0] * shape[1] * size
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + n]}
        data += bytes((i * 7 + 3) % 61 for i in range(n))  # Small, finite.
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def seed(name, arch, config, modules, r, dtype):
    tensors = []
    for module, fin, fout in modules:
        p = "base_model.model." + module
        tensors += [(p + ".lora_A.weight", [r, fin]),
                    (p + ".lora_B.weight", [fout, r])]
    j = json.dumps(config).encode()
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(bytes([arch]) + struct.pack("<I", len(j)) + j +
                safetensors(tensors, dtype))


os.makedirs(OUT, exist_ok=True)
seed("llama_q_v_f32", 0,
     {"peft_type": "LORA", "r": 2, "lora_alpha": 4,
      "target_modules": ["q_proj", "v_proj"], "layers_to_transform": [1]},
     [("model.layers.1.self_attn.q_proj", 64, 64),
      ("model.layers.1.self_attn.v_proj", 64, 32)], 2, "F32")
seed("llama_mlp_bf16", 0,
     {"peft_type": "LORA", "r": 1, "lora_alpha": 8, "use_rslora": True,
      "target_modules": "all-linear", "lora_dropout": 0.1},
     [("model.layers.0.mlp.gate_proj", 64, 176),
      ("model.layers.3.mlp.down_proj", 176, 64)], 1, "BF16")
seed("gpt2_attn_f16", 1,
     {"peft_type": "LORA", "r": 2, "lora_alpha": 16, "fan_in_fan_out": True,
      "target_modules": ["c_attn", "c_proj"]},
     [("transformer.h.0.attn.c_attn", 64, 192),
      ("transformer.h.2.mlp.c_proj", 256, 64)], 2, "F16")
