"""How models are trained: data, models, plain training with defences, Opacus DP-SGD,
the faulty DP-SGD zoo, user plugins and commands, and turning trained models into observations.

Modules (import them directly; nothing is re-exported here so that importing the
package stays cheap):

- ``trainers.data``: shipped datasets (``load_dataset``), user files (``load_user_data``),
  seeded splits (``split_dataset``).
- ``trainers.models``: ``build_model(name, in_shape, n_classes, generator=...)``.
- ``trainers.plain``: ``train_plain``, ``train_distilled``, ``predict_logits``.
- ``trainers.output_defences``: top-k, rounding, label-only, temperature.
- ``trainers.opacus_dp``: ``train_dp`` (Opacus DP-SGD with a pluggable optimizer class).
- ``trainers.zoo``: faulty DP-SGD variants, ``train_faulty``.
- ``trainers.plugins``: ``load_optimizer_plugin``, ``load_blackbox_plugin``.
- ``trainers.command``: ``load_command_trainer`` (a black-box trainer run as a command line).
- ``trainers.observe``: ``observe_models`` (K models -> an observations run).
- ``trainers.fast``: vectorised K-model DP-SGD (separate owner).
"""
