"""An Ollama Modelfile and a short README beside an exported GGUF. Torch-free (jinja2 only).

Ollama does not run the model's Jinja chat template: a Modelfile's TEMPLATE is a Go template. The
common families are written from the turn markers each uses — ChatML (SmolLM2, Qwen2/3, Qwen3-MoE),
Llama 3.x, Mistral and Mixtral ([INST]), Gemma 1/2/3, Phi-3/3.5/4, Cohere (Command-R) and Granite — and checked: the model's own Jinja template is rendered on a
sample conversation and must produce exactly what the turn markers produce (`check_family`), else
the Modelfile says the template is approximate. PARAMETER stop lists the end-of-turn tokens, and
SYSTEM carries the system prompt the training data used (or the template's built-in default).
"""
from __future__ import annotations

import json
from dataclasses import dataclass

SAMPLE = [{"role": "system", "content": "SYS"}, {"role": "user", "content": "U1"},
          {"role": "assistant", "content": "A1"}, {"role": "user", "content": "U2"}]


@dataclass(frozen=True)
class Family:
    name: str
    marker: str                         # a string only this family's templates contain
    turns: dict                         # role -> (before, after) the content
    stops: tuple[str, ...]
    bos: str = ""                       # what the template itself writes first (the BOS text)


FAMILIES = (
    Family("chatml", "<|im_start|>", {r: (f"<|im_start|>{r}\n", "<|im_end|>\n") for r in ("system", "user", "assistant")},
           ("<|im_end|>", "<|im_start|>")),
    Family("llama3", "<|start_header_id|>",
           {r: (f"<|start_header_id|>{r}<|end_header_id|>\n\n", "<|eot_id|>") for r in ("system", "user", "assistant")},
           ("<|eot_id|>", "<|start_header_id|>"), bos="<|begin_of_text|>"),
    Family("gemma", "<start_of_turn>", {"user": ("<start_of_turn>user\n", "<end_of_turn>\n"),
                                        "assistant": ("<start_of_turn>model\n", "<end_of_turn>\n")},
           ("<end_of_turn>", "<start_of_turn>"), bos="<bos>"),
    Family("phi3", "<|assistant|>", {r: (f"<|{r}|>\n", "<|end|>\n") for r in ("system", "user", "assistant")},
           ("<|end|>", "<|user|>", "<|assistant|>")),
    Family("mistral", "[INST]", {"user": ("[INST] ", " [/INST]"), "assistant": ("", "</s>")}, ("[INST]", "</s>"),
           bos="<s>"),
    # Cohere (Command-R): turns between <|START_OF_TURN_TOKEN|> and <|END_OF_TURN_TOKEN|>, the model's role CHATBOT
    Family("cohere", "<|START_OF_TURN_TOKEN|>",
           {r: (f"<|START_OF_TURN_TOKEN|><|{tag}_TOKEN|>", "<|END_OF_TURN_TOKEN|>")
            for r, tag in (("system", "SYSTEM"), ("user", "USER"), ("assistant", "CHATBOT"))},
           ("<|END_OF_TURN_TOKEN|>", "<|START_OF_TURN_TOKEN|>"), bos="<BOS_TOKEN>"),
    # Granite 3.x: <|start_of_role|>ROLE<|end_of_role|>…<|end_of_text|> and a newline
    Family("granite", "<|start_of_role|>",
           {r: (f"<|start_of_role|>{r}<|end_of_role|>", "<|end_of_text|>\n") for r in ("system", "user", "assistant")},
           ("<|end_of_text|>", "<|start_of_role|>")),
)


def family_of(template: str | None) -> Family | None:
    if not template:
        return None
    return next((f for f in FAMILIES if f.marker in template), None)


def render_jinja(template: str, messages: list[dict], add_generation_prompt: bool, bos: str = "", eos: str = "") -> str:
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.TemplateError(message)
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                            bos_token=bos, eos_token=eos)


def render_turns(family: Family, messages: list[dict], add_generation_prompt: bool) -> str:
    """What the Modelfile's Go template writes for `messages` (system folded into the first user
    turn for families without a system role, as their templates do)."""
    out, system = family.bos, None
    for m in messages:
        if m["role"] == "system" and "system" not in family.turns:
            system = m["content"]
            continue
        content = m["content"]
        if m["role"] == "user" and system is not None:
            content, system = f"{system}\n\n{content}", None
        before, after = family.turns[m["role"]]
        out += before + content + after
    if add_generation_prompt and "assistant" in family.turns and family.name != "mistral":
        out += family.turns["assistant"][0]
    return out


def default_system(template: str | None) -> str | None:
    """A system prompt the template adds by itself when the conversation has none (SmolLM2's)."""
    family = family_of(template)
    if family is None or "system" not in family.turns:
        return None
    try:
        text = render_jinja(template, [{"role": "user", "content": "U1"}], False, family.bos)
    except Exception:           # noqa: BLE001 — a template we cannot render has no default we can read
        return None
    before, after = family.turns["system"]
    start = text.find(before)
    if start < 0 or text.find(family.turns["user"][0]) < start:
        return None
    end = text.find(after, start + len(before))
    return text[start + len(before):end] if end > 0 else None


def check_family(template: str, family: Family) -> bool:
    """True when the Jinja template renders the sample conversation exactly as the turn markers do."""
    messages = SAMPLE
    try:
        rendered = render_jinja(template, messages, True, family.bos, family.stops[-1] if family.name == "mistral" else "")
    except Exception:           # noqa: BLE001 — templates that raise on the sample (e.g. strict alternation)
        return False
    return rendered == render_turns(family, messages, True)


def go_template(family: Family) -> str:
    """The Modelfile TEMPLATE for a family (Go template syntax, Ollama's .System/.Messages)."""
    t = family.turns
    if family.name == "mistral":
        return ('{{ range $i, $_ := .Messages }}{{ if eq .Role "user" }}[INST] '
                '{{ if and $.System (eq (len (slice $.Messages $i)) 1) }}{{ $.System }}\n\n{{ end }}'
                '{{ .Content }} [/INST]{{ else if eq .Role "assistant" }}{{ .Content }}</s>{{ end }}{{ end }}')
    if "system" not in t:                         # gemma: the system prompt opens the first user turn
        return ('{{ range $i, $_ := .Messages }}{{ if eq .Role "user" }}' + t["user"][0] +
                '{{ if and $.System (eq $i 0) }}{{ $.System }}\n\n{{ end }}{{ .Content }}' + t["user"][1] +
                '{{ else if eq .Role "assistant" }}' + t["assistant"][0] + '{{ .Content }}' + t["assistant"][1] +
                '{{ end }}{{ end }}' + t["assistant"][0])
    s_before, s_after = t["system"]
    return ('{{ if .System }}' + s_before + '{{ .System }}' + s_after + '{{ end }}'
            '{{ range .Messages }}{{ if eq .Role "user" }}' + t["user"][0] + '{{ .Content }}' + t["user"][1] +
            '{{ else if eq .Role "assistant" }}' + t["assistant"][0] + '{{ .Content }}' + t["assistant"][1] +
            '{{ end }}{{ end }}' + t["assistant"][0])


def _quote(text: str) -> str:
    return '"""' + text.replace('"""', '\\"\\"\\"') + '"""'


def modelfile(from_: str, template: str | None, eot: str | None, system: str | None,
              adapter: str | None = None, projector: str | None = None) -> tuple[str, dict]:
    """(Modelfile text, facts: family, verified, stops, system) for an exported GGUF. `projector`: a
    vision-language model's mmproj file, a second FROM line (how Ollama takes a model and its projector)."""
    family = family_of(template)
    lines = ["# Written by LoRA Studio. Create the model with: ollama create NAME -f THIS_FILE", f"FROM {from_}"]
    if projector:
        lines.append(f"FROM {projector}")
    if adapter:
        lines.append(f"ADAPTER {adapter}")
    facts = {"family": family.name if family else None, "verified": False, "stops": [], "system": None}
    if family is not None:
        facts["verified"] = check_family(template, family)
        if not facts["verified"]:
            lines.append(f"# The model's Jinja chat template is close to {family.name} but not identical; this "
                         "TEMPLATE is the standard one. Check answers before relying on it.")
        lines.append(f"TEMPLATE {_quote(go_template(family))}")
        stops = list(dict.fromkeys(([eot] if eot else []) + list(family.stops)))
    elif template:
        lines.append("# The chat template is not one of the known families (ChatML, Llama 3, Mistral, Gemma, "
                     "Phi-3, Cohere, Granite); Ollama reads tokenizer.chat_template from the file to pick one.")
        stops = [eot] if eot else []
    else:
        lines.append("# The run trained on plain text (no chat template): prompts go in as they are.")
        lines.append('TEMPLATE """{{ .Prompt }}"""')
        stops = [eot] if eot else []
    for stop in stops:
        lines.append(f"PARAMETER stop {json.dumps(stop)}")         # quoted, as Ollama's own Modelfiles
    system = system or default_system(template)
    if system:
        lines.append(f"SYSTEM {_quote(system)}")
    facts.update(stops=stops, system=system)
    return "\n".join(lines) + "\n", facts


def readme(gguf_name: str, modelfile_name: str, model_name: str, ftype: str, size: str, adapter_only: bool,
           base_gguf: str | None, fidelity: dict | None, facts: dict) -> str:
    tag = model_name.lower().replace(" ", "-")
    run = (f"llama-cli -m {base_gguf or 'BASE.gguf'} --lora {gguf_name}" if adapter_only
           else f"llama-cli -m {gguf_name}")
    base_note = ("" if not adapter_only else
                 f"\nThis is a LoRA adapter: it needs the base model as GGUF, "
                 f"{'`' + base_gguf + '`' if base_gguf else 'converted by llama.cpp (convert_hf_to_gguf.py) from the same base'}"
                 " — the Modelfile's FROM line names it.\n")
    check = ""
    if fidelity and fidelity.get("checked_by") == "gguf-py":
        check = ("\nNot checked in llama.cpp after writing: there was no base GGUF of this family to load the "
                 f"adapter on; its {fidelity['tensors']} tensors read back with gguf-py, largest difference "
                 f"{fidelity['tensor_max_abs_diff']:.3g}.\n")
    elif fidelity and fidelity.get("checked_by") == "llama.cpp":
        how = ("loaded by llama.cpp as a LoRA on the base GGUF" if adapter_only else "opened in llama.cpp")
        answers = (f"; greedy answers (through the chat template in the file) equal on {fidelity['greedy_agree']} of "
                   f"{fidelity['prompts']}")
        flag = f" — FLAGGED: {fidelity['difference']}" if fidelity.get("flagged") and fidelity.get("difference") else ""
        check = (f"\nChecked after writing: {how} and compared with transformers' base + adapter on "
                 f"{fidelity['prompts']} prompts from the training data: the next token agrees at "
                 f"{100 * fidelity['top1_agree']:.1f}% of {fidelity['positions']} positions, the top-5 set at "
                 f"{100 * fidelity['top5_agree']:.1f}%{answers}{flag}.\n")
    elif fidelity:
        how = ("read back with gguf-py and applied to the base" if adapter_only
               else "read back with transformers' GGUF loader")
        check = (f"\nChecked after writing: {how}, {fidelity['prompts']} prompts "
                 f"from the training data, largest |Δ logit| {fidelity['max_abs_diff']:.3g} (mean "
                 f"{fidelity['mean_abs_diff']:.3g}) against base + adapter; greedy answers agree on "
                 f"{fidelity['greedy_agree']} of {fidelity['prompts']}"
                 f"{' — FLAGGED: beyond what ' + ftype + ' rounding explains' if fidelity.get('flagged') else ''}.\n")
    template = (f"chat template: {facts['family']}{'' if facts['verified'] else ' (approximate)'}"
                if facts.get("family") else "chat template: read by Ollama from the file")
    return f"""# {model_name} ({ftype.upper()} GGUF)

`{gguf_name}` — {size}, exported by LoRA Studio; {template}; stop tokens: {', '.join(facts['stops']) or 'none'}.
{base_note}
## Ollama

```
ollama create {tag} -f {modelfile_name}
ollama run {tag}
```

## llama.cpp

```
{run}
```

## LM Studio

{lm_studio_notes(gguf_name, adapter_only, facts)}
{check}"""


def lm_studio_notes(gguf_name: str, adapter_only: bool, facts: dict) -> str:
    """How to open the file in LM Studio: where it goes, the chat template LM Studio reads from the
    file (the "Prompt Template" it shows), and the stop strings to set when it does not stop by itself."""
    if adapter_only:
        return ("LM Studio does not load LoRA adapters: export the merged model (without --adapter-only) to use "
                "this fine-tune there, or use the adapter with Ollama or llama.cpp above.")
    stops = ", ".join(f"`{s}`" for s in facts.get("stops") or []) or "none"
    template = ("the chat template stored in the file" + (f" ({facts['family']})" if facts.get("family") else "")
                if facts.get("family") or facts.get("stops") else "no chat template (plain text prompts)")
    return (f"Import the file: `lms import {gguf_name}` (LM Studio's command line), or copy it into LM Studio's "
            f"models folder as `~/.lmstudio/models/lorastudio/<name>/{gguf_name}` (each model in a folder two "
            f"levels deep). LM Studio reads {template}; if answers run on past the end of a turn, add the stop "
            f"strings {stops} under the model's settings (\"Stop Strings\").")
