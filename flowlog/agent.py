"""Placeholder until this subcommand lands."""

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    subparsers.add_parser("agent", help="(not available yet)").set_defaults(run=_unavailable)


def _unavailable(args: argparse.Namespace) -> int:
    print("flowlog: this command is not available yet")
    return 2
