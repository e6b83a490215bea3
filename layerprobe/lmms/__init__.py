"""layerprobe inside lmms-eval: ``lmms-eval --model layerprobe`` (installed with ``layerprobe[lmms]``).

    lmms-eval --model layerprobe \\
      --model_args pretrained=llava-hf/llava-1.5-7b-hf,method=contrastive,profile=llava15_7b,percentile=20 \\
      --tasks textvqa_val --batch_size 8 --log_samples --output_path logs/

``manifest`` registers the model with lmms-eval (entry-point group ``lmms_eval.models``),
``model.LayerprobeLMM`` answers lmms-eval's requests with a layerprobe method, ``options`` turns
model args into layerprobe objects, and ``tasks`` writes local lmms-eval tasks over files on disk.
Only ``manifest`` and ``model`` import lmms-eval, so the rest of layerprobe never needs it.
"""
