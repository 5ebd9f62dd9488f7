namespace MLNet.FineTune.Peft;

/// <summary>PEFT's task types (<c>task_type</c>).</summary>
public static class PeftTaskType
{
    /// <summary>Sequence classification; PEFT adds "classifier" and "score" to modules_to_save.</summary>
    public const string SequenceClassification = "SEQ_CLS";
    /// <summary>Extractive question answering; PEFT adds "qa_outputs" to modules_to_save.</summary>
    public const string QuestionAnswering = "QUESTION_ANS";
    /// <summary>Causal language modelling.</summary>
    public const string CausalLM = "CAUSAL_LM";
    /// <summary>Token classification.</summary>
    public const string TokenClassification = "TOKEN_CLS";
    /// <summary>Feature extraction (a bare encoder).</summary>
    public const string FeatureExtraction = "FEATURE_EXTRACTION";

    /// <summary>The module names PEFT's task model adds to modules_to_save for a task type.</summary>
    public static IReadOnlyList<string> DefaultModulesToSave(string? taskType) => taskType switch
    {
        SequenceClassification => ["classifier", "score"],
        QuestionAnswering => ["qa_outputs"],
        _ => [],
    };
}
