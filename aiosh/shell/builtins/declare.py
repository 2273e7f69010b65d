"""declare / typeset, local, readonly, export, unset: variables with attributes and arrays, as bash has them.

`name=(…)` arguments arrive already expanded by the interpreter (`Interp.decl_items`), because an array literal
is syntax, not a string.
"""

from __future__ import annotations

import re

from ..errors import ShellError
from ..quoting import double_quote, value_quote
from ..state import Assoc, Indexed
from ..variables import NAME, save_local, split_subscript
from . import BuiltinContext, BuiltinRegistry
from .getopt import Options

FLAG_LETTERS = "aAilnrtux"
SHOW_ORDER = "aAilnrtux"
DECLARE = Options(FLAG_LETTERS + "gpfF", plus=True)  # `declare -a=x`: `-=: invalid option`, as in bash
UNSET = Options("fnv")


def describe(ctx: BuiltinContext, name: str) -> str | None:
    """One `declare -p` line, or None when the name is neither a variable nor an array."""
    st = ctx.state
    arr = st.arrays.get(name)
    if arr is None and name not in st.vars and not (name in st.readonly or name in st.integer or name in st.exported):
        return None
    flags = ""
    if isinstance(arr, Indexed):
        flags += "a"
    elif isinstance(arr, Assoc):
        flags += "A"
    if name in st.integer:
        flags += "i"
    if name in st.readonly:
        flags += "r"
    if name in st.exported:
        flags += "x"
    head = f"declare -{flags or '-'} {name}"
    if (arr is None and name not in st.vars) or (arr is not None and not arr and getattr(arr, "unset", False)):
        return head  # declared with attributes, never given a value
    if isinstance(arr, Indexed):
        body = " ".join(f"[{k}]={double_quote(arr[k])}" for k in sorted(arr))
        return f"{head}=({body})"
    if isinstance(arr, Assoc):
        body = "".join(f"[{_key(k)}]={double_quote(v)} " for k, v in arr.items())
        return f"{head}=({body})"
    return f"{head}={double_quote(st.vars[name])}"


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_.-]+", key) else double_quote(key)


def declare_family(ctx: BuiltinContext, *, local: bool, readonly: bool = False, export: bool = False) -> int:
    interp = ctx.interp
    st = ctx.state
    flags, rest = DECLARE.switches(ctx.args)  # `-x` on, `+x` off
    operands = list(enumerate(ctx.args[len(ctx.args) - len(rest) :], len(ctx.args) - len(rest) + 1))  # argv places
    if readonly:
        flags.setdefault("r", True)
    if export:
        flags.setdefault("x", True)
    if local and (not interp.func_depth or not interp.locals):
        return ctx.error("can only be used in a function")
    make_local = interp.func_depth > 0 and interp.locals and not flags.get("g") and (local or not (readonly or export))
    if flags.get("f") or flags.get("F"):
        return _functions(ctx, operands, names_only=bool(flags.get("F")), listing=bool(flags.get("p")))
    if flags.get("p") or not operands:
        bare = not operands and not any(flags.get(c) for c in FLAG_LETTERS)
        if bare and not flags.get("p") and not (readonly or export):
            for name in sorted(set(st.vars) | set(st.arrays)):
                if name in st.vars:
                    ctx.write(f"{name}={value_quote(st.vars[name])}\n")
            return 0
        return _print(ctx, flags, [a for _, a in operands], readonly=readonly, export=export)
    status = 0
    items = interp.decl_items
    for pos, arg in operands:
        name, eq, value = arg.partition("=")
        append = name.endswith("+")
        if append:
            name = name[:-1]
        base, sub = split_subscript(name)
        if not NAME.fullmatch(base):
            status = ctx.error(f"`{arg}': not a valid identifier")
            continue
        try:
            if make_local:
                scope = interp.locals[-1]
                if base not in scope:
                    scope[base] = save_local(st, base)
                    if not eq or flags.get("a") or flags.get("A") or pos in items:
                        # `local x` hides the outer value (bash keeps an unset local); `local -a x` is empty
                        st.vars.pop(base, None)
                        st.arrays.pop(base, None)
            if flags.get("r") is False and base in st.readonly:
                raise ShellError(f"{base}: readonly variable")
            _set_attrs(st, base, flags, before=True)
            if pos in items:
                interp.variables.assign_array(base, items[pos], append=append, assoc=True if flags.get("A") else None)
            elif eq:
                if flags.get("A") and base not in st.arrays:
                    st.arrays[base] = Assoc()
                elif flags.get("a") and base not in st.arrays:
                    interp.variables.assign_array(base, [], append=True)
                interp.variables.assign(name, value, append=append)
            elif not readonly:  # `declare -a x`: an array without a value yet (`readonly -a x` makes none)
                if flags.get("A") and not isinstance(st.arrays.get(base), Assoc):
                    st.vars.pop(base, None)
                    st.arrays[base] = Assoc()
                    st.arrays[base].unset = True
                elif flags.get("a") and base not in st.arrays:
                    interp.variables.assign_array(base, [], append=True)
                    st.arrays[base].unset = True
            _set_attrs(st, base, flags, before=False)
        except ShellError as exc:
            status = ctx.error(exc.message)
    return status


def _set_attrs(st, name: str, flags: dict[str, bool], *, before: bool) -> None:  # noqa: ANN001
    """-i and -x apply before the value is stored (it is evaluated / exported); -r after."""
    if before:
        for c, group in (("i", st.integer), ("x", st.exported)):
            if c in flags:
                (group.add if flags[c] else group.discard)(name)
        return
    if flags.get("r"):
        st.readonly.add(name)


def _print(ctx: BuiltinContext, flags: dict[str, bool], names: list[str], *, readonly: bool, export: bool) -> int:
    st = ctx.state
    status = 0
    if not names:
        every = sorted(set(st.vars) | set(st.arrays))
        for name in every:
            if readonly and name not in st.readonly:
                continue
            if export and name not in st.exported:
                continue
            if flags.get("r") and name not in st.readonly:
                continue
            if flags.get("x") and name not in st.exported:
                continue
            if flags.get("a") and not isinstance(st.arrays.get(name), Indexed):
                continue
            if flags.get("A") and not isinstance(st.arrays.get(name), Assoc):
                continue
            line = describe(ctx, name)
            if line:
                ctx.write(line + "\n")
        return 0
    for name in names:
        line = describe(ctx, name)
        if line is None:
            status = ctx.error(f"{name}: not found")
            continue
        ctx.write(line + "\n")
    return status


def _functions(ctx: BuiltinContext, operands: list[tuple[int, str]], *, names_only: bool, listing: bool) -> int:
    """-f: definitions; -F: `declare -f NAME` lines, or with names (and no -p) just each name, as in bash."""
    st = ctx.state
    names = [a for _, a in operands] or sorted(st.functions)
    status = 0
    for name in names:
        body = st.functions.get(name)
        if body is None:
            status = 1
            continue
        if names_only:
            ctx.write(f"{name}\n" if operands and not listing else f"declare -f {name}\n")
        else:
            ctx.write(f"{name} () \n{body.render()}\n")
    return status


def declare(ctx: BuiltinContext) -> int:
    return declare_family(ctx, local=False)


def local(ctx: BuiltinContext) -> int:
    return declare_family(ctx, local=True)


def readonly(ctx: BuiltinContext) -> int:
    return declare_family(ctx, local=False, readonly=True)


def unset(ctx: BuiltinContext) -> int:
    st = ctx.state
    flags, args = UNSET.switches(ctx.args)
    if "f" in flags and "v" in flags:  # before any name, as in bash (status 1, no usage)
        return ctx.error("cannot simultaneously unset a function and a variable")
    status = 0
    for name in args:
        if "f" in flags:
            st.functions.pop(name, None)
            continue
        base, sub = split_subscript(name)
        if not NAME.fullmatch(base):
            if "v" in flags:
                status = ctx.error(f"`{name}': not a valid identifier")
            else:  # bash: not a variable's name, so a function's (any word names a function)
                st.functions.pop(name, None)
            continue
        if sub is None and base not in st.vars and base not in st.arrays and "v" not in flags:
            st.functions.pop(base, None)  # bash: no such variable, so the function of that name
            continue
        try:
            ctx.interp.variables.unset_var(name)
        except ShellError as exc:
            status = ctx.error(exc.message)
    return status


def register(reg: BuiltinRegistry) -> None:
    usage = "declare [-aAfFgilnrtux] [-p] [name[=value] ...]"
    reg.register("declare", declare, "set variable values and attributes (arrays, -i, -r, -x)", usage)
    reg.register("typeset", declare, "set variable values and attributes (same as declare)",
                 usage.replace("declare", "typeset"))  # fmt: skip
    reg.register("local", local, "make variables local to the running function", "local [option] name[=value] ...")
    reg.register("readonly", readonly, "mark variables as unchangeable", "readonly [-aAf] [name[=value] ...] or readonly -p")
    reg.register("unset", unset, "remove variables, array elements or functions", "unset [-f] [-v] [-n] [name ...]")
