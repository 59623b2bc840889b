"""The Ollama Modelfile beside a GGUF: the Go TEMPLATE per chat-template family, checked against the
model's own Jinja template on a sample conversation; stops, SYSTEM, and the README's commands."""
import pytest

from tests.helpers.tiny_models import CHATML

from lorastudio.core.runs.gguf_modelfile import (SAMPLE, default_system, family_of, modelfile, readme,
                                                 render_jinja, render_turns)

SMOLLM2 = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
           "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
           "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
           "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
LLAMA3 = ("{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n'"
          " + m['content'] + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}"
          "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
PHI3 = ("{% for m in messages %}{{ '<|' + m['role'] + '|>\n' + m['content'] + '<|end|>\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}")
GEMMA = ("{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set sys = messages[0]['content'] + '\n\n' %}"
         "{% set msgs = messages[1:] %}{% else %}{% set sys = '' %}{% set msgs = messages %}{% endif %}"
         "{% for m in msgs %}{% set role = 'model' if m['role'] == 'assistant' else m['role'] %}"
         "{{ '<start_of_turn>' + role + '\n' + (sys if loop.first else '') + m['content'] + '<end_of_turn>\n' }}"
         "{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}")
COHERE = ("{{ bos_token }}{% for m in messages %}{% set tag = {'system': 'SYSTEM', 'user': 'USER', "
          "'assistant': 'CHATBOT'}[m['role']] %}{{ '<|START_OF_TURN_TOKEN|><|' + tag + '_TOKEN|>' + m['content'] + "
          "'<|END_OF_TURN_TOKEN|>' }}{% endfor %}{% if add_generation_prompt %}"
          "{{ '<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>' }}{% endif %}")
GRANITE = ("{% for m in messages %}{{ '<|start_of_role|>' + m['role'] + '<|end_of_role|>' + m['content'] + "
           "'<|end_of_text|>\n' }}{% endfor %}{% if add_generation_prompt %}"
           "{{ '<|start_of_role|>assistant<|end_of_role|>' }}{% endif %}")
ALPACA = "{% for m in messages %}### {{ m['role'] }}:\n{{ m['content'] }}\n\n{% endfor %}### assistant:\n"


@pytest.mark.parametrize("template, family, stop", [
    (CHATML, "chatml", "<|im_end|>"), (SMOLLM2, "chatml", "<|im_end|>"), (LLAMA3, "llama3", "<|eot_id|>"),
    (PHI3, "phi3", "<|end|>"), (GEMMA, "gemma", "<end_of_turn>"),
    (COHERE, "cohere", "<|END_OF_TURN_TOKEN|>"), (GRANITE, "granite", "<|end_of_text|>"),
])
def test_known_families_are_verified_against_their_jinja_template(template, family, stop):
    text, facts = modelfile("./m.gguf", template, stop, None)
    assert facts["family"] == family and facts["verified"], text
    assert text.splitlines()[1] == "FROM ./m.gguf" and f'PARAMETER stop "{stop}"\n' in text
    assert "TEMPLATE \"\"\"" in text and "{{ .Content }}" in text and "approximate" not in text
    fam = family_of(template)
    assert render_jinja(template, SAMPLE, True, fam.bos) == render_turns(fam, SAMPLE, True)


def test_a_template_that_differs_from_its_family_is_marked_approximate():
    odd = CHATML.replace("<|im_end|>\n", "<|im_end|>\n\n")
    text, facts = modelfile("./m.gguf", odd, "<|im_end|>", None)
    assert facts["family"] == "chatml" and not facts["verified"]
    assert "close to chatml but not identical" in text


def test_system_prompt_from_the_data_or_the_templates_default():
    assert default_system(SMOLLM2) == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    assert default_system(CHATML) is None
    text, facts = modelfile("./m.gguf", SMOLLM2, "<|im_end|>", "You triage support tickets.")
    assert 'SYSTEM """You triage support tickets."""' in text and facts["system"] == "You triage support tickets."
    text, _ = modelfile("./m.gguf", SMOLLM2, "<|im_end|>", None)
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM, trained by Hugging Face"""' in text


def test_unknown_and_missing_templates_and_the_adapter_line():
    text, facts = modelfile("./m.gguf", ALPACA, "</s>", None)
    assert facts["family"] is None and "TEMPLATE" not in text and "Ollama reads tokenizer.chat_template" in text
    assert 'PARAMETER stop "</s>"' in text
    text, _ = modelfile("./m.gguf", None, "</s>", None)
    assert 'TEMPLATE """{{ .Prompt }}"""' in text and "plain text" in text
    text, _ = modelfile("/models/base.gguf", CHATML, "<|im_end|>", None, adapter="./lora.gguf")
    assert text.splitlines()[1:3] == ["FROM /models/base.gguf", "ADAPTER ./lora.gguf"]
    mistral, facts = modelfile("./m.gguf", "{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}",
                               "</s>", None)
    assert facts["family"] == "mistral" and "[INST] " in mistral and 'PARAMETER stop "[INST]"' in mistral


def test_readme_names_the_commands_and_the_fidelity():
    facts = {"family": "chatml", "verified": True, "stops": ["<|im_end|>"]}
    fidelity = {"prompts": 4, "max_abs_diff": 0.07, "mean_abs_diff": 0.007, "greedy_agree": 4, "flagged": False}
    text = readme("demo-q8_0.gguf", "demo-q8_0.Modelfile", "SmolLM2 demo", "q8_0", "138 MiB", False, None,
                  fidelity, facts)
    assert "ollama create smollm2-demo -f demo-q8_0.Modelfile" in text and "llama-cli -m demo-q8_0.gguf" in text and "-cnv" not in text
    assert "largest |Δ logit| 0.07" in text and "greedy answers agree on 4 of 4" in text
    lora = readme("lora.gguf", "lora.Modelfile", "x", "f16", "5 MiB", True, "/m/base.gguf", None, facts)
    assert "llama-cli -m /m/base.gguf --lora lora.gguf" in lora and "`/m/base.gguf`" in lora


def test_readme_reports_the_check_in_llama_cpp_and_lm_studio_notes():
    facts = {"family": "gemma", "verified": True, "stops": ["<end_of_turn>", "<start_of_turn>"]}
    fidelity = {"checked_by": "llama.cpp", "prompts": 4, "positions": 80, "top1_agree": 1.0, "top5_agree": 0.975,
                "greedy_agree": 4, "max_abs_diff": 0.01, "mean_abs_diff": 0.001, "flagged": False}
    text = readme("g-f16.gguf", "g-f16.Modelfile", "G", "f16", "1 MiB", False, None, fidelity, facts)
    assert "opened in llama.cpp" in text and "next token agrees at 100.0% of 80 positions" in text
    assert "top-5 set at 97.5%" in text and "equal on 4 of 4" in text and "FLAGGED" not in text
    assert "## LM Studio" in text and "lms import g-f16.gguf" in text and "`<end_of_turn>`" in text
    flagged = dict(fidelity, flagged=True, top1_agree=0.5, difference="llama.cpp picks the same next token at only 50%")
    assert "FLAGGED: llama.cpp picks the same next token at only 50%" in readme(
        "g.gguf", "g.Modelfile", "G", "q4_0", "1 MiB", False, None, flagged, facts)
    lora = readme("l.gguf", "l.Modelfile", "L", "f16", "1 MiB", True, None, dict(fidelity), facts)
    assert "loaded by llama.cpp as a LoRA on the base GGUF" in lora and "LM Studio does not load LoRA" in lora
