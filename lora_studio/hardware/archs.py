"""Public architecture configs of the models users train, written out so the
estimate works for single-file checkpoints (which carry no config) and the
calibration can build real-size models without downloading anything."""
from __future__ import annotations

_CROSS = "CrossAttnDownBlock2D"

SD15_UNET = {
    "sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": [320, 640, 1280, 1280],
    "down_block_types": [_CROSS, _CROSS, _CROSS, "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "cross_attention_dim": 768, "attention_head_dim": 8, "use_linear_projection": False,
    "norm_num_groups": 32,
}

SD21_UNET = {
    **SD15_UNET, "sample_size": 96, "cross_attention_dim": 1024, "attention_head_dim": [5, 10, 20, 20],
    "use_linear_projection": True,
}

SDXL_UNET = {
    "sample_size": 128, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": [320, 640, 1280],
    "down_block_types": ["DownBlock2D", _CROSS, _CROSS],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "transformer_layers_per_block": [1, 2, 10], "attention_head_dim": [5, 10, 20],
    "cross_attention_dim": 2048, "use_linear_projection": True, "norm_num_groups": 32,
    "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
}

CLIP_L = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
          "num_attention_heads": 12, "vocab_size": 49408, "max_position_embeddings": 77,
          "projection_dim": 768, "hidden_act": "quick_gelu"}
OPENCLIP_H = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 23,
              "num_attention_heads": 16, "vocab_size": 49408, "max_position_embeddings": 77,
              "projection_dim": 512, "hidden_act": "gelu"}
OPENCLIP_BIGG = {"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32,
                 "num_attention_heads": 20, "vocab_size": 49408, "max_position_embeddings": 77,
                 "projection_dim": 1280, "hidden_act": "gelu", "with_projection": True}

SD_VAE = {"in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2,
          "block_out_channels": [128, 256, 512, 512], "norm_num_groups": 32,
          "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4}

SD_COMPONENTS = {
    "sd1": {"unet": SD15_UNET, "text_encoder": CLIP_L, "vae": SD_VAE},
    "sd2": {"unet": SD21_UNET, "text_encoder": OPENCLIP_H, "vae": SD_VAE},
    "sdxl": {"unet": SDXL_UNET, "text_encoder": CLIP_L, "text_encoder_2": OPENCLIP_BIGG, "vae": SD_VAE},
}

LLAMA_1B = {  # Llama 3.2 1B
    "model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
    "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64, "vocab_size": 128256,
    "max_position_embeddings": 131072, "rope_theta": 500000.0, "tie_word_embeddings": True,
    "rms_norm_eps": 1e-5,
}

LLAMA_7B = {  # Llama 2 7B
    "model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000,
    "max_position_embeddings": 4096, "tie_word_embeddings": False, "rms_norm_eps": 1e-5,
}
