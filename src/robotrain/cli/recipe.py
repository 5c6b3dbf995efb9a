"""`robotrain recipe`: run a whole experiment from one recipe file (record -> train ->
evaluate -> report), or list the built-in recipes.

Examples:
    robotrain recipe list
    robotrain recipe run smolvla_sim --out outputs/smolvla_sim
    robotrain recipe run act_sim --out outputs/act_seed2 --seed 2000
    robotrain recipe run smolvla_sim --out outputs/cmp/smolvla --dataset outputs/cmp/act/dataset
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("recipe", help="run a whole experiment from a recipe file, or list recipes",
                                   description="A recipe (TOML) records sim data, trains, evaluates in the sim "
                                               "and writes a report; stages whose results exist are reused.")
    sub = parser.add_subparsers(dest="recipe_command", metavar="{run,list}")
    run = sub.add_parser("run", help="run a recipe (a .toml file or a built-in name)")
    run.add_argument("recipe", help="recipe file, or the name of a built-in recipe (robotrain recipe list)")
    run.add_argument("--out", required=True, help="folder for dataset/, train/, report/ (reused when present)")
    run.add_argument("--seed", type=int, default=None, help="training seed (sampler order, init, dropout)")
    run.add_argument("--steps", type=int, default=None, help="training steps (a cosine schedule follows)")
    run.add_argument("--dataset", default=None,
                     help="train on this existing dataset instead of recording one (e.g. another run's dataset/, "
                          "to compare policies on the same data)")
    run.add_argument("--workers", type=int, default=None, help="sim processes (default: CPU cores)")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.set_defaults(func=run_recipe_command)
    lst = sub.add_parser("list", help="list the built-in recipes")
    lst.set_defaults(func=list_recipes)
    parser.set_defaults(func=lambda args: _no_subcommand(parser))


def _no_subcommand(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def run_recipe_command(args: argparse.Namespace) -> int:
    import dataclasses

    from robotrain.errors import ConfigError
    from robotrain.recipes.recipe import load_recipe, run_recipe, with_overrides

    recipe = with_overrides(load_recipe(args.recipe), seed=args.seed, steps=args.steps)
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    recipe = dataclasses.replace(recipe, workers=args.workers, dataset=args.dataset)
    run_recipe(recipe, args.out, progress=not args.no_progress)
    return 0


def list_recipes(args: argparse.Namespace) -> int:
    from robotrain.recipes.recipe import builtin_recipes, load_recipe

    for name in builtin_recipes():
        print(f"{name:16s} {load_recipe(name).description}")
    return 0
