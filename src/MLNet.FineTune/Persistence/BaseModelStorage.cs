namespace MLNet.FineTune;

/// <summary>How the fitted transformer stores the frozen base model when saved into model.zip.</summary>
public enum BaseModelStorage
{
    /// <summary>The base weights, config and tokenizer files go inside the zip: the file is portable (larger).</summary>
    SelfContained,

    /// <summary>The zip records the base folder's path and a hash of its files, checked at load: small zips that
    /// share one base model on disk.</summary>
    ByReference,
}
