"""The board's sign-in pages in Chinese (登录, 首次登录 / 重置密码), the signed-in person's bar
with 退出登录, and the error pages. Plain HTML forms: they work without any script.

Every value is escaped; every form carries its CSRF token; errors are summarised at the top
and repeated beside the field (GOV.UK style), in Chinese with the code underneath.
"""

from __future__ import annotations

from html import escape
from typing import Any
from urllib.parse import quote

from accounts.roles import ROLE_NAMES_ZH, Principal
from dashboard.html import STYLE, _page

FORM_STYLE = """
header nav{float:right;font-size:13px;margin-top:4px}
header nav form{display:inline;margin-left:8px}
header nav button{background:none;border:1px solid #fff;color:#fff;border-radius:4px;
  padding:2px 10px;cursor:pointer;font-size:13px}
form.account{max-width:420px;background:#fff;border-radius:6px;padding:16px 20px;
  box-shadow:0 1px 3px #0002}
form.account label{display:block;margin:12px 0 4px;font-weight:bold}
form.account input{width:100%;box-sizing:border-box;padding:8px;font-size:16px;
  border:1px solid #999;border-radius:4px}
form.account input.err{border:2px solid #c62828}
form.account button{margin-top:16px;background:#b71c1c;color:#fff;border:0;border-radius:4px;
  padding:10px 24px;font-size:16px;cursor:pointer}
.summary{border:3px solid #c62828;background:#fff;padding:8px 16px;margin-bottom:16px;
  max-width:420px}
.field-err{color:#c62828;font-size:13px;margin:2px 0}
.hint{color:#555;font-size:13px}
small.code{color:#777}
"""


def stylesheet() -> str:
    """/static/board.css: the board's style and the forms'."""
    return STYLE + FORM_STYLE


def nav(caller: Principal, csrf: str) -> str:
    """Who is signed in, and a 退出登录 button (a POST form with its CSRF token)."""
    roles = "、".join(dict.fromkeys(ROLE_NAMES_ZH.get(g.role, g.role) for g in caller.grants))
    return (f"<nav>{escape(caller.name)} ({escape(roles)})"
            '<form method="post" action="/sign-out">'
            f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
            "<button type=submit>退出登录</button></form></nav>")


def _errors(error: tuple[str, str, str | None] | None) -> tuple[str, str | None, str]:
    """The summary box, the field in error, and the message beside it."""
    if error is None:
        return "", None, ""
    zh, code, field = error
    summary = (f'<div class="summary" role="alert"><h2>出现问题</h2><p>{escape(zh)}</p>'
               f'<small class="code">{escape(code)}</small></div>')
    beside = f'<p class="field-err">{escape(zh)}</p>'
    return summary, field, beside


def _input(name: str, label: str, kind: str, value: str, err_field: str | None, beside: str,
           autocomplete: str, maxlength: int) -> str:
    err = err_field == name
    return (f'<label for="{name}">{escape(label)}</label>{beside if err else ""}'
            f'<input id="{name}" name="{name}" type="{kind}" value="{escape(value)}" '
            f'autocomplete="{autocomplete}" maxlength="{maxlength}" required'
            f'{" class=err aria-invalid=true" if err else ""}>')


def sign_in_page(csrf: str, next_path: str, login: str = "",
                 error: tuple[str, str, str | None] | None = None) -> str:
    summary, field, beside = _errors(error)
    # a refusal of both fields (wrong password) shows beside the password
    field = field or ("password" if error else None)
    body = (f"{summary}<form class=account method=post action=/sign-in>"
            f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
            f'<input type="hidden" name="next" value="{escape(next_path)}">'
            + _input("login", "账号名或手机号", "text", login, field, beside, "username", 64)
            + _input("password", "密码", "password", "", field, beside, "current-password", 256)
            + "<button type=submit>登录</button></form>"
            f'<p class="hint">首次登录或密码已重置? <a href="/password?next={quote(next_path)}">'
            "用管理员提供的一次性验证码设置密码</a></p>"
            '<p class="hint">连续 5 次输错将暂时锁定。忘记密码请联系管理员重置。</p>')
    return _page("登录 · 网格化管理督办看板", "请使用本人账号登录", body)


def password_page(csrf: str, next_path: str, login: str = "",
                  error: tuple[str, str, str | None] | None = None) -> str:
    summary, field, beside = _errors(error)
    body = (f"{summary}<form class=account method=post action=/password>"
            f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
            f'<input type="hidden" name="next" value="{escape(next_path)}">'
            + _input("login", "账号名或手机号", "text", login, field, beside, "username", 64)
            + _input("code", "一次性验证码", "text", "", field, beside, "one-time-code", 64)
            + _input("new_password", "新密码(至少 10 位, 不含账号名)", "password", "", field,
                     beside, "new-password", 256)
            + _input("confirm", "再次输入新密码", "password", "", field, beside, "new-password",
                     256)
            + "<button type=submit>设置密码并登录</button></form>"
            '<p class="hint"><a href="/sign-in">返回登录</a></p>')
    return _page("设置密码 · 网格化管理督办看板", "首次登录或密码重置后, 用一次性验证码设置密码", body)


def error_page(status: int, zh: str, code: str, en: str = "") -> str:
    titles = {401: "请先登录", 403: "无权访问", 404: "未找到", 429: "请稍后再试"}
    body = (f'<section><p>{escape(zh)}</p><small class="code">{status} · {escape(code)}'
            f'{": " + escape(en) if en else ""}</small>'
            '<p><a href="/">返回看板</a></p></section>')
    return _page(titles.get(status, "出错了"), "网格化管理督办看板", body)


def contacts_section(found: dict[str, Any] | None) -> str:
    """回访信息: the residents' names and numbers, masked unless the viewer calls them back."""
    if not found or not found["contacts"]:
        return ""
    rows = "".join(
        f"<tr><td>{escape(c.get('name', '—'))}</td><td>{escape(c.get('phone', '—'))}</td>"
        f"<td>{escape(c.get('email', '—'))}</td><td><code>{escape(c['report_id'])}</code></td></tr>"
        for c in found["contacts"])
    if found.get("note_zh"):
        hint = f'<p class="bad">{escape(found["note_zh"])}</p>'
    elif found["masked"]:
        hint = '<p class="hint">个人信息已脱敏显示; 回访由督办人员负责。</p>'
    else:
        hint = '<p class="hint">个人信息仅用于回访; 本次查看已记录在案。</p>'
    return ("<section><h2>回访信息 (个人信息)</h2>" + hint
            + "<table><tr><th>姓名</th><th>电话</th><th>电子邮箱</th><th>上报编号</th></tr>"
            + rows + "</table></section>")
