"""An ordinary OpenAI-SDK program, as people write them: it knows nothing of aiosh.

Modes may be joined with commas (`plain,stream,badkey`). It reads OPENAI_BASE_URL and OPENAI_API_KEY from its environment (the SDK does), so under aiosh it talks to the
door. The tests run it in several modes: `plain`, `stream`, `completion`, `tools`, `json`, `long` (a long stream, one line per
chunk), `hold` (one call, then wait for a file), `badkey`, `models`, `unknown-model`, `unsupported`.
"""

from __future__ import annotations

import json
import os
import sys
import time

import openai
from openai import OpenAI

MODEL = os.environ.get("DOOR_TEST_MODEL", "local")
PROMPT = [{"role": "user", "content": "Name three rivers."}]


def main(mode: str) -> int:
    client = OpenAI(max_retries=0)
    if mode == "plain":
        r = client.chat.completions.create(model=MODEL, messages=PROMPT, max_tokens=12, temperature=0, seed=1)
        print(json.dumps({"text": r.choices[0].message.content, "finish": r.choices[0].finish_reason,
                          "usage": r.usage.model_dump() if r.usage else None}))
    elif mode == "completion":
        r = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=4, temperature=0,
                                      stop=["\n"])
        print(json.dumps({"text": r.choices[0].text, "usage": r.usage.completion_tokens if r.usage else None}))
    elif mode == "stream":
        chunks, usage = [], None
        stream = client.chat.completions.create(model=MODEL, messages=PROMPT, max_tokens=12, temperature=0,
                                                seed=1, stream=True, stream_options={"include_usage": True})
        finish = None
        for ev in stream:
            if ev.usage is not None:
                usage = ev.usage.model_dump()
            for c in ev.choices:
                if c.delta.content:
                    chunks.append(c.delta.content)
                finish = c.finish_reason or finish
        print(json.dumps({"text": "".join(chunks), "chunks": len(chunks), "finish": finish, "usage": usage}))
    elif mode == "tools":
        tools = [{"type": "function", "function": {
            "name": "get_weather", "description": "The current weather in a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
        r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "What is the weather "
                                                                   "in Paris?"}],
                                           tools=tools, tool_choice="required", temperature=0, seed=1)
        msg = r.choices[0].message
        calls = [{"name": c.function.name, "arguments": json.loads(c.function.arguments)} for c in msg.tool_calls or []]
        print(json.dumps({"finish": r.choices[0].finish_reason, "calls": calls}))
    elif mode == "json":
        schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
                                                   "age": {"type": "integer"}},
                  "required": ["name", "age"], "additionalProperties": False}
        r = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Invent a person."}], temperature=0, seed=1,
            max_tokens=60, response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": schema}})
        print(json.dumps({"data": json.loads(r.choices[0].message.content)}))
    elif mode == "long":
        n = int(sys.argv[2]) if len(sys.argv) > 2 else 400
        flag = sys.argv[3] if len(sys.argv) > 3 else ""
        stream = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Tell a long story."}], max_tokens=n, stream=True,
            extra_body={"ignore_eos": True})
        count = 0
        try:
            for ev in stream:
                for c in ev.choices:
                    if c.delta.content:
                        count += 1
                        print(f"chunk {count} {time.time():.3f}", flush=True)
                        if flag and count == 1:
                            open(flag, "w").close()
        except openai.APIError as exc:
            print(f"stream error: {exc.message}", flush=True)
            return 3
        print(f"done {count}", flush=True)
    elif mode == "hold":
        r = client.chat.completions.create(model=MODEL, messages=PROMPT, max_tokens=8, temperature=0)
        print(f"called {r.usage.completion_tokens}", flush=True)
        open("called", "w").close()
        deadline = time.time() + 60
        while not os.path.exists("release") and time.time() < deadline:
            time.sleep(0.05)
    elif mode == "badkey":
        try:
            OpenAI(api_key="sk-not-a-real-token", max_retries=0).chat.completions.create(model=MODEL, messages=PROMPT)
        except openai.AuthenticationError as exc:
            print(f"401 {exc.status_code}")
            return 0
        return 1
    elif mode == "models":
        print(json.dumps(sorted(m.id for m in client.models.list())))
    elif mode == "unknown-model":
        try:
            client.chat.completions.create(model="gpt-4o", messages=PROMPT)
        except openai.NotFoundError as exc:
            print(f"404 {exc.message}")
            return 0
        return 1
    elif mode == "unsupported":
        try:
            client.chat.completions.create(model=MODEL, messages=PROMPT, n=2)
        except openai.BadRequestError as exc:
            print(f"400 {exc.message}")
            return 0
        return 1
    else:
        print(f"door_client: unknown mode {mode}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    # Several modes in one run (plain,stream,badkey): one interpreter start-up instead of three.
    sys.exit(max(main(m) for m in (sys.argv[1] if len(sys.argv) > 1 else "plain").split(",")))
