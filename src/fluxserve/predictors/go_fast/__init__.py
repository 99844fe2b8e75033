"""go_fast: what a request with ``go_fast: true`` runs with on a CUDA GPU. Each optimisation is a named step that
can be switched on or off alone, so ``benchmarks/gpu_pipeline.py`` can measure what each one buys.

**One process serves both settings.** ``go_fast: false`` keeps Replicate's meaning, "run in original bf16": it
runs the pipeline exactly as loaded (eager, bf16, default attention), never touched by anything here. ``go_fast:
true`` runs a second pipeline object that shares the text encoders and tokenizers with the first and has

* its own transformer when any step changes the transformer's modules (fused QKV, fp8, attention backend,
  compile). It is copied block by block and each block is converted before the next is copied, so building it
  never needs a second full bf16 copy in memory: with fp8 the copy costs 14.2 GiB (fp8 block linears, the
  adaLN modulation linears kept in bf16), without fp8 as much as the original (22.2 GiB);
* its own VAE copy (~170 MB) for the ``vae`` step;
* a :class:`~fluxserve.predictors.go_fast.step_cache.StepCache` switched on per call (its schedule depends on the
  request's step count) for the 28-step models.

This mirrors cog-flux, whose fp8 model is a second transformer sharing T5/CLIP/AE with the bf16 one. go_fast
needs the whole model on the GPU: with model CPU offload (GPUs under 48 GiB) it is off, with the reason logged.

**Steps** (:data:`~.options.STEPS`; defaults per model in :data:`~.options.DEFAULT_STEPS`):

``fused_qkv``   one GEMM for q, k and v (and for the text stream's), diffusers' ``fuse_projections``; lossless.
``fp8``         torchao row-wise dynamic float8 (``Float8DynamicActivationFloat8WeightConfig(PerRow())``) on the
                blocks' linear layers, not the adaLN modulation ones; CUDA compute capability 8.9+ and torchao.
``attention``   diffusers' attention backend (default ``_native_cudnn``, cuDNN SDPA as cog-flux uses).
``compile``     regional ``torch.compile`` of the repeated blocks (``compile_repeated_blocks``, fullgraph), with
                flux-fast's inductor flags; compile artifacts cached on disk (inductor cache + mega-cache file).
``vae``         the VAE in channels_last with a compiled ``decode``.
``step_cache``  TaylorSeer-style forecasting of skipped steps, Replicate's Kontext schedule (13 of 28 in full).
``fbcache``     diffusers' First Block Cache (adaptive; one host sync per step; not combinable with ``compile``).

Every step checks what it needs and, when it cannot run, is skipped with a reason that the setup log and each
go_fast request's log show. On the CPU go_fast does nothing (the predictors say so in the prediction logs) unless
``allow_cpu`` is set, which tests and the CPU benchmark use to run the steps that work there.

**Modules.** :mod:`~.options` (what to build, from :class:`~fluxserve.config.Settings`), :mod:`~.steps` (building
it), :mod:`~.path` (the built :class:`~.path.FastPath` that requests run on), :mod:`~.compile_cache` (the regional
compile and its caches on disk) and :mod:`~.step_cache`. The settings are ``FLUXSERVE_GO_FAST_*`` and
``FLUXSERVE_COMPILE_CACHE_DIR`` (:meth:`~.options.FastOptions.from_settings`); torch, diffusers and torchao are
imported inside functions only (and by :mod:`~.step_cache`, itself imported inside functions), so importing this
package never imports torch.
"""
