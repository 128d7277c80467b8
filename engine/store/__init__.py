"""The store: the journal that persists the ledger's inputs and reads them back."""
