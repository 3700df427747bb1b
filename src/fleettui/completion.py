"""`fleet completion bash|zsh|fish`: shell completion generated from the argparse parser.

The parser in fleettui.cli is the one description of every command, flag and choice, so the
scripts are generated from it and cannot drift. Each script carries small lookup functions
(subcommands, options, which options take a value, value choices) keyed by the command path,
and one driver that walks the words typed so far. Node names come from `fleet completion
--nodes`, which reads the fleet config and never touches the network.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

FILES = "@files"
NODES = "@nodes"
NODE_ARGS = {"name", "node"}  # positionals that name a configured node (except in `add`)
NODE_OPTIONS = {"names", "node"}  # options that do (`bulk --names`, `fit --node`)


@dataclass
class Option:
    flags: list[str]
    help: str
    values: str | None = None  # None: a flag; "": free text; FILES / NODES; or "a b c" choices


@dataclass
class Command:
    path: str  # "" for `fleet`, "agent token" for `fleet agent token`
    subcommands: dict[str, str] = field(default_factory=dict)  # name -> help
    options: list[Option] = field(default_factory=list)
    positionals: list[str] = field(default_factory=list)  # value spec per position


def _values(action: argparse.Action, path: str) -> str:
    if action.choices:
        return " ".join(str(c) for c in action.choices)
    if action.type is Path or action.dest in ("config", "path"):
        return FILES
    positional = not action.option_strings
    if (not positional and action.dest in NODE_OPTIONS) or (
        positional and action.dest in NODE_ARGS and path != "add"
    ):
        return NODES
    return ""


def walk(parser: argparse.ArgumentParser, path: str = "") -> list[Command]:
    """Every command reachable from `parser`, parents first."""
    cmd = Command(path)
    out = [cmd]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                cmd.subcommands[name] = helps.get(name, "")
                out += walk(sub, f"{path} {name}".strip())
        elif action.option_strings:
            if action.help == argparse.SUPPRESS:
                continue
            takes = action.nargs != 0
            cmd.options.append(
                Option(
                    list(action.option_strings),
                    action.help or "",
                    _values(action, path) if takes else None,
                )
            )
        else:
            cmd.positionals.append(_values(action, path))
    return out


def _case(entries: dict[str, str]) -> str:
    """A POSIX `case` body mapping keys to the text a function echoes."""
    return "\n".join(
        f"        {shlex.quote(k)}) printf '%s\\n' {shlex.quote(v)} ;;"
        for k, v in entries.items()
        if v
    )


def _lookups(cmds: list[Command]) -> str:
    """Shell functions shared by the bash and zsh scripts (plain POSIX-ish, no arrays)."""
    subs = {c.path: " ".join(c.subcommands) for c in cmds}
    opts = {c.path: " ".join(f for o in c.options for f in o.flags) for c in cmds}
    valued = {
        c.path: " ".join(f for o in c.options if o.values is not None for f in o.flags)
        for c in cmds
    }
    values = {
        f"{c.path}|{flag}": o.values
        for c in cmds
        for o in c.options
        if o.values
        for flag in o.flags
    }
    positional = {f"{c.path}|{i}": v for c in cmds for i, v in enumerate(c.positionals) if v}
    return f"""\
_fleet_subs() {{
    case "$1" in
{_case(subs)}
    esac
}}
_fleet_opts() {{
    case "$1" in
{_case(opts)}
    esac
}}
_fleet_valued() {{
    case "$1" in
{_case(valued)}
    esac
}}
_fleet_optvalues() {{
    case "$1|$2" in
{_case(values)}
    esac
}}
_fleet_positional() {{
    case "$1|$2" in
{_case(positional)}
    esac
}}
# the command path typed so far ("agent token") and how many positionals follow it
_fleet_walk() {{
    _fleet_cmdpath="" _fleet_npos=0 _fleet_expect=""
    local w
    for w in "$@"; do
        if [ -n "$_fleet_expect" ]; then _fleet_expect=""; continue; fi
        case "$w" in
            -*=*) ;;
            -*) case " $(_fleet_valued "$_fleet_cmdpath") " in
                    *" $w "*) _fleet_expect="$w" ;;
                esac ;;
            *) if [ "$_fleet_npos" -eq 0 ] && \\
                   case " $(_fleet_subs "$_fleet_cmdpath") " in *" $w "*) true ;; *) false ;; esac
               then
                   _fleet_cmdpath="${{_fleet_cmdpath:+$_fleet_cmdpath }}$w"
               else
                   _fleet_npos=$((_fleet_npos + 1))
               fi ;;
        esac
    done
}}
# what may come next: words, @files or @nodes
_fleet_candidates() {{
    if [ -n "$_fleet_expect" ]; then
        _fleet_optvalues "$_fleet_cmdpath" "$_fleet_expect"
    else
        case "$1" in
            -*) _fleet_opts "$_fleet_cmdpath" ;;
            *) if [ "$_fleet_npos" -eq 0 ]; then _fleet_subs "$_fleet_cmdpath"; fi
               _fleet_positional "$_fleet_cmdpath" "$_fleet_npos" ;;
        esac
    fi
}}
"""


def bash(cmds: list[Command]) -> str:
    return f"""\
# bash completion for fleet, generated by `fleet completion bash`.
# Load it with:  source <(fleet completion bash)   (or save it to
# ~/.local/share/bash-completion/completions/fleet)
{_lookups(cmds)}
_fleet() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" cands
    _fleet_walk "${{COMP_WORDS[@]:1:COMP_CWORD-1}}"
    cands=$(_fleet_candidates "$cur")
    COMPREPLY=()
    case "$cands" in
        "{FILES}") compopt -o filenames 2>/dev/null
                   COMPREPLY=($(compgen -f -- "$cur")) ;;
        "{NODES}") COMPREPLY=($(compgen -W "$(fleet completion --nodes 2>/dev/null)" -- "$cur")) ;;
        *) COMPREPLY=($(compgen -W "$cands" -- "$cur")) ;;
    esac
}}
complete -F _fleet fleet
"""


def _zsh_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace(":", "\\:").replace("'", "'\\''")


def zsh(cmds: list[Command]) -> str:
    described = "\n".join(
        f"        {shlex.quote(c.path)}) subs=("
        + " ".join(f"'{_zsh_escape(n)}:{_zsh_escape(h)}'" for n, h in c.subcommands.items())
        + ") ;;"
        for c in cmds
        if c.subcommands
    )
    return f"""\
#compdef fleet
# zsh completion for fleet, generated by `fleet completion zsh`.
# Load it with:  source <(fleet completion zsh)   (after compinit), or save it as _fleet
# in a directory on $fpath.
{_lookups(cmds)}
_fleet() {{
    local cur="${{words[CURRENT]}}" cands
    local -a subs
    _fleet_walk "${{(@)words[2,CURRENT-1]}}"
    cands=$(_fleet_candidates "$cur")
    case "$cands" in
        "{FILES}") _files ;;
        "{NODES}") compadd -- ${{(f)"$(fleet completion --nodes 2>/dev/null)"}} ;;
        *)
            if [[ $cur != -* && -z $_fleet_expect && $_fleet_npos -eq 0 ]]; then
                case "$_fleet_cmdpath" in
{described}
                esac
            fi
            if (( ${{#subs}} )); then
                _describe -t commands 'fleet command' subs
                cands=$(_fleet_positional "$_fleet_cmdpath" "$_fleet_npos")
            fi
            [[ -n $cands ]] && compadd -- ${{=cands}}
            ;;
    esac
}}
if [[ "${{funcstack[1]}}" == "_fleet" ]]; then
    _fleet "$@"
else
    compdef _fleet fleet
fi
"""


def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def fish(cmds: list[Command]) -> str:
    def switch(fn: str, entries: dict[str, str]) -> str:
        cases = "\n".join(
            f"        case {_fish_quote(k)}\n            printf '%s\\n' {v}"
            for k, v in entries.items()
            if v
        )
        return f"function {fn}\n    switch $argv[1]\n{cases}\n    end\nend\n"

    subs = {c.path: " ".join(c.subcommands) for c in cmds}
    valued = {
        c.path: " ".join(f for o in c.options if o.values is not None for f in o.flags)
        for c in cmds
    }
    lines = [
        "# fish completion for fleet, generated by `fleet completion fish`.",
        "# Load it with:  fleet completion fish | source   (or save it to",
        "# ~/.config/fish/completions/fleet.fish)",
        switch("__fleet_subs", subs),
        switch("__fleet_valued", valued),
        """\
function __fleet_state
    # prints the command path, then the number of positionals after it
    set -l path
    set -l npos 0
    set -l expect 0
    set -l tokens (commandline -opc)
    set -e tokens[1]
    for w in $tokens
        if test $expect = 1
            set expect 0
            continue
        end
        if string match -q -- '-*=*' $w
            continue
        else if string match -q -- '-*' $w
            if contains -- $w (__fleet_valued "$path")
                set expect 1
            end
            continue
        end
        if test $npos = 0; and contains -- $w (__fleet_subs "$path")
            set path (string trim -- "$path $w")
        else
            set npos (math $npos + 1)
        end
    end
    echo "p:$path"
    echo $npos
end
function __fleet_at
    set -l state (__fleet_state)
    test "$state[1]" = "p:$argv[1]"
end
function __fleet_pos
    set -l state (__fleet_state)
    test "$state[1]" = "p:$argv[1]"; and test "$state[2]" = "$argv[2]"
end
complete -c fleet -f
""",
    ]
    for c in cmds:
        at = f"__fleet_pos {_fish_quote(c.path)} 0"
        for name, help in c.subcommands.items():
            lines.append(f"complete -c fleet -n {_fish_quote(at)} -a {name} -d {_fish_quote(help)}")
        cond = _fish_quote(f"__fleet_at {_fish_quote(c.path)}")
        for o in c.options:
            spec = " ".join(f"-l {f[2:]}" if f.startswith("--") else f"-s {f[1:]}" for f in o.flags)
            if o.values == FILES:
                spec += " -r -F"
            elif o.values == NODES:
                spec += " -x -a '(fleet completion --nodes 2>/dev/null)'"
            elif o.values:
                spec += f" -x -a {_fish_quote(o.values)}"
            elif o.values == "":
                spec += " -x"
            lines.append(f"complete -c fleet -n {cond} {spec} -d {_fish_quote(o.help)}")
        for i, v in enumerate(c.positionals):
            pos = _fish_quote(f"__fleet_pos {_fish_quote(c.path)} {i}")
            if v == FILES:
                lines.append(f"complete -c fleet -n {pos} -F")
            elif v == NODES:
                lines.append(
                    f"complete -c fleet -n {pos} -a '(fleet completion --nodes 2>/dev/null)'"
                )
            elif v:
                lines.append(f"complete -c fleet -n {pos} -a {_fish_quote(v)}")
    return "\n".join(lines) + "\n"


SHELLS = {"bash": bash, "zsh": zsh, "fish": fish}


def node_names(config: Path | None) -> list[str]:
    """Configured node names for completion; nothing (never an error) when there is no config."""
    from fleettui.config import FleetConfigError, load_fleet_config

    try:
        return [n.name for n in load_fleet_config(config).nodes]
    except (FleetConfigError, OSError):
        return []


def cmd_completion(args: argparse.Namespace) -> int:
    if args.nodes:
        for name in node_names(getattr(args, "config", None)):
            print(name)
        return 0
    if args.shell is None:
        print("fleet completion: name a shell: bash, zsh or fish", file=sys.stderr)
        return 2
    from fleettui.cli import build_parser

    print(SHELLS[args.shell](walk(build_parser())), end="")
    return 0
