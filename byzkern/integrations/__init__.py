"""Plug-ins for the engines users train with: ``torch_ddp`` (torch.distributed and DDP) and
``flower`` (Flower strategies, extra ``byzkern[flower]``). Import the submodule you need; each
imports its engine, which byzkern itself does not need.
"""
