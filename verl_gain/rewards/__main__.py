"""``python -m verl_gain.rewards NAME``: print the file of a reward module (math, code, auto) for verl's config."""

import sys

from verl_gain.rewards import REWARD_MODULES, reward_file

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in REWARD_MODULES:
        sys.exit(f"usage: python -m verl_gain.rewards {{{','.join(REWARD_MODULES)}}}")
    print(reward_file(sys.argv[1]))
